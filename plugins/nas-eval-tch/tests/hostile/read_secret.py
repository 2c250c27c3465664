# Tries to read files outside the project: the password hashes and ssh keys.
import os

data = open("/etc/shadow").read()
keys = os.listdir(os.path.expanduser("~root/.ssh"))
