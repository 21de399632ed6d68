"""The camera client of the camera path: frames from a video or a folder of images, sent to a
Function URL as the course's cameras sent them, answers taken from the HTTP response (one stage)
or the response queue (two stages), and a summary like the course's workload generator.

    python -m camera send --url URL [--response-queue URL] (--video FILE [--every 15] |
        --images DIR) [--expected CSV] [--concurrency N] [--interval S]

It talks to AWS (or the local cloud) through HTTP and boto3 only: it never imports the function
(lambda_image) or the local cloud (localcloud).
"""
