from datagen.cli.review import main

raise SystemExit(main())
