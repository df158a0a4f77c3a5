"""Small helpers shared by tests."""


def write_mnist_csv(path, x, y, header=True):
    cols = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    rows = [",".join(map(str, [int(lbl), *img.reshape(-1).tolist()])) for img, lbl in zip(x, y, strict=True)]
    path.write_text((cols + "\n" if header else "") + "\n".join(rows) + "\n")
