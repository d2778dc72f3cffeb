"""The products the shop sells, with their price and the stock inventory starts with."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    name: str
    price: float
    stock: int


PRODUCTS: dict[str, Product] = {
    p.sku: p
    for p in (
        Product("tea", "Green tea, 100 g", 6.50, 100_000),
        Product("mug", "Stoneware mug", 12.00, 100_000),
        Product("pot", "Cast-iron teapot", 48.00, 100_000),
        Product("kettle", "Copper kettle (few left)", 89.00, 3),
    )
}

PROMO_CODES: dict[str, float] = {"WELCOME10": 0.10, "TEATIME": 0.25}  # share off


def subtotal(items: list[dict[str, int | str]]) -> float:
    return round(sum(PRODUCTS[str(i["sku"])].price * int(i["qty"]) for i in items), 2)
