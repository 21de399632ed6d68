"""The face-recognition function: video sampling, MTCNN detection, dlib/facenet embeddings, gallery
matching, student-record lookup and the Lambda entry points (see docs/contracts.md).

Importing the package is cheap: torch, dlib and the models load on first use.
"""
