# Allocates (and touches) memory without end.
hog = []
while True:
    hog.append(b"x" * (64 << 20))
