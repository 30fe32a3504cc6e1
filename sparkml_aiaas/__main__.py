from sparkml_aiaas.cli import main

raise SystemExit(main())
