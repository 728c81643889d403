"""Offline stand-in for the pip bootstrap script ansible-test downloads.

ansible-test bootstraps pip in its sanity virtualenvs with a get-pip script fetched from
a host this environment cannot reach. This stand-in does the same job from what is
available: the interpreter's own ensurepip, then pip from PyPI at the wanted version.
`make sanity` copies it to ~/.ansible/test/cache/get_pip_<version>.py.
"""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q"] + args)
