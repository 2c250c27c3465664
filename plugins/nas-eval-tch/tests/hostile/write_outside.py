# Tries to write outside its scratch directory; the target path comes from the test.
TARGET = "@TARGET@"
with open(TARGET, "w") as f:
    f.write("pwned")
