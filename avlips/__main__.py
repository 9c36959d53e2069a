from avlips.cli import main

raise SystemExit(main())
