from feedservice.entry.cli import main

raise SystemExit(main())
