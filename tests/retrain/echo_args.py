"""A stand-in trainer command: writes the arguments it received (JSON) to the first one."""

import json
import sys

if __name__ == "__main__":
    with open(sys.argv[1], "w") as output:
        json.dump(sys.argv[1:], output)
