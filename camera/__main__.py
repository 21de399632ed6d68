"""`python -m camera`: see camera.cli."""

from camera.cli import main

raise SystemExit(main())
