depthwise_weight_grad_widths: tuple[int, ...]
depthwise_conv_min_width: int
global_products_max_terms: int
global_products_row_block: int
linear_rows_max_terms: int
linear_pack_rows: int
vector_isa: str
full_width: int

def depthwise_weight_grad(
    y: int, g: int, out: int, B: int, C: int, H: int, W: int, kh: int, kw: int, threads: int, /
) -> None: ...
def depthwise_conv(
    x: int, k: int, out: int, B: int, C: int, H: int, W: int, kh: int, kw: int, turned: bool, threads: int, /
) -> None: ...
def linear_rows(
    a: int,
    sr: int,
    sc: int,
    O: int,
    bias: int,
    xs: tuple[int, ...],
    rows: tuple[int, ...],
    out: int,
    B: int,
    N: int,
    threads: int,
    /,
) -> None: ...
def linear_pack(a: int, sr: int, sc: int, O: int, I: int, out: int, /) -> None: ...
def linear_rows_packed(
    packed: int,
    O: int,
    bias: int,
    xs: tuple[int, ...],
    rows: tuple[int, ...],
    out: int,
    B: int,
    N: int,
    threads: int,
    /,
) -> None: ...
def standardize(x: int, y: int, r: int, B: int, C: int, N: int, eps: float, threads: int, /) -> None: ...
def global_products(a: int, ys: tuple[int, ...], outs: tuple[int, ...], P: int, n: int, threads: int, /) -> None: ...
def global_products_backward(
    a: int, ys: tuple[int, ...], gs: tuple[int, ...], ga: int, outs: tuple[int, ...], P: int, n: int, threads: int, /
) -> None: ...
