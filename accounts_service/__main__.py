"""Entry point: python -m accounts_service."""

from accounts_service.main import main

if __name__ == "__main__":
    main()
