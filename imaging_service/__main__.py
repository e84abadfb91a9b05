"""Entry point: python -m imaging_service."""

from imaging_service.main import main

if __name__ == "__main__":
    main()
