"""``python -m tokenmill``: the ``tokenmill`` command line."""

from tokenmill.cli import main

if __name__ == "__main__":
    main(prog_name="tokenmill")
