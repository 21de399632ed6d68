"""The web tier: the course's image service (``POST /`` with ``inputFile``), videos into the
daemon's path, and a page for people — one more client of the daemon's placement."""
