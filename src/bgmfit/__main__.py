from bgmfit.cli import main

raise SystemExit(main())
