from feedservice.cli.main import main

if __name__ == "__main__":  # process pools re-import the main module: run nothing then
    raise SystemExit(main())
