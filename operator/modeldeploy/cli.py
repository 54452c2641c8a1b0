"""Command line: `modeldeploy run | optimize | pull | render | version`."""
import sys


def main(argv=None) -> int:
    """Entry point for the `modeldeploy` console script."""
    from modeldeploy import __version__
    print(__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
