from datagen.review.cli import main

raise SystemExit(main())
