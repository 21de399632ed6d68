from lambda_image.cli import main

raise SystemExit(main())
