"""Seeded synthetic OpenRTB 2.6 traffic with ground truth of which DSPs bid.

    gen = TrafficGenerator(seed=0, n_bidders=16)
    gen.bidders                      # ["dsp-01", ..., "dsp-16"]
    sr = gen.request()               # SyntheticRequest
    sr.request                       # dict: an OpenRTB 2.6 bid request (orjson.dumps it to send)
    sr.timestamp                     # float: when it "happened" (seconds since the epoch, UTC)
    sr.bids                          # frozenset[str]: the DSPs that bid on it
    for sr in gen.requests(1000): ...

The same seed (and options) gives the same sequence. Traffic: Zipf-distributed sites and apps
(publishers own several), phone/tablet/desktop/CTV devices with matching OSes, makes and
connections, a country/region mix, common banner sizes plus video and native, lognormal floors,
deals, privacy signals, and timestamps spread over `days` days with a daily cycle.

Each DSP has hidden targeting (countries, media, device types, categories, inventory type, floor
tolerance, active hours, blocked publishers, need for a device id) and a base rate calibrated so
its average bid rate lands between `min_rate` and `max_rate`; whether it bids on a request is a
coin flip with that probability, so bidding is learnable but noisy.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

_BATCH = 256  # requests drawn per refill; bid coins are flipped for a whole batch at once
# A Monday, so day-of-week features start at 0.
DEFAULT_START = 1762128000.0  # 2025-11-03T00:00:00Z


@dataclass(frozen=True)
class SyntheticRequest:
    request: dict[str, Any]
    timestamp: float
    bids: frozenset[str]


@dataclass(frozen=True)
class _Property:
    """A site or an app: what every request for it shares."""

    kind: str  # "site" | "app"
    ident: str
    name: str
    domain: str
    bundle: str | None
    publisher: str
    publisher_index: int
    cat: str
    platform: str  # app platform ("ios"/"android"/"ctv"); "web" for sites


@dataclass
class _Dsp:
    name: str
    scale: float
    countries: dict[str, float]
    media: dict[str, float]
    devices: dict[int, float]
    cats: dict[str, float]
    inventory: dict[str, float]
    floor_tolerance: float
    hours: list[float]
    blocked_residue: int
    needs_id: bool
    gdpr_mult: float
    ctv_mult: float = field(default=1.0)


_WORDS = (  # noqa: SIM905 - a word list reads better as text
    "news daily sports weather recipes games tech finance travel auto health style "
    "movies music kids home garden science photo market deals local city world "
    "bike pets food fit craft play shop style book art cloud star "
    "blue red green sun moon river lake hill peak"
).split()

_CATS = (
    ("IAB1", 6),  # arts & entertainment
    ("IAB2", 3),  # automotive
    ("IAB3", 3),  # business
    ("IAB5", 2),  # education
    ("IAB7", 4),  # health & fitness
    ("IAB8", 4),  # food & drink
    ("IAB9", 6),  # hobbies & interests
    ("IAB12", 8),  # news
    ("IAB13", 3),  # personal finance
    ("IAB15", 2),  # science
    ("IAB17", 8),  # sports
    ("IAB18", 3),  # style & fashion
    ("IAB19", 6),  # technology & computing
    ("IAB20", 4),  # travel
    ("IAB22", 3),  # shopping
)
_APP_CATS = (("IAB9-30", 10), ("IAB1-6", 4), ("IAB19-18", 3), ("IAB12", 2), ("IAB17", 2))

_COUNTRIES: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("USA", 34, ("CA", "TX", "FL", "NY", "PA", "IL", "OH", "GA", "NC", "MI", "WA", "AZ")),
    ("IND", 8, ("MH", "DL", "KA", "TN", "UP", "WB")),
    ("GBR", 7, ("ENG", "SCT", "WLS", "NIR")),
    ("DEU", 6, ("BY", "NW", "BW", "BE", "HE")),
    ("JPN", 5, ("13", "27", "14", "23")),
    ("BRA", 5, ("SP", "RJ", "MG", "RS")),
    ("FRA", 5, ("IDF", "ARA", "PAC", "OCC")),
    ("CAN", 4, ("ON", "QC", "BC", "AB")),
    ("IDN", 3, ("JK", "JB", "JT")),
    ("MEX", 3, ("CMX", "JAL", "NLE")),
    ("AUS", 3, ("NSW", "VIC", "QLD")),
    ("ESP", 3, ("MD", "CT", "AN")),
    ("ITA", 3, ("25", "62", "72")),
    ("KOR", 2, ("11", "26", "41")),
    ("NLD", 2, ("NH", "ZH", "UT")),
    ("TUR", 2, ("34", "06", "35")),
    ("POL", 2, ("14", "12", "24")),
    ("SWE", 1, ("AB", "O", "M")),
    ("ZAF", 1, ("GP", "WC", "KZN")),
    ("ARG", 1, ("B", "C", "X")),
)
_EU = frozenset({"GBR", "DEU", "FRA", "ESP", "ITA", "NLD", "POL", "SWE"})
_COUNTRY_PRICE = {"USA": 1.0, "CAN": 0.8, "GBR": 0.8, "AUS": 0.8, "DEU": 0.7, "JPN": 0.7}

# (devicetype, os, makes, weight) by traffic kind. OpenRTB devicetype: 2 PC, 3 CTV, 4 phone,
# 5 tablet, 7 set-top box.
_SITE_DEVICES = (
    (2, "Windows", (), 28.0),
    (2, "macOS", ("Apple",), 10.0),
    (2, "Linux", (), 2.0),
    (4, "iOS", ("Apple",), 22.0),
    (4, "Android", ("Samsung", "Google", "Xiaomi", "Motorola", "OnePlus"), 28.0),
    (5, "iOS", ("Apple",), 6.0),
    (5, "Android", ("Samsung", "Amazon", "Lenovo"), 4.0),
)
_CTV_DEVICES = (
    (3, "Roku", ("Roku",), 35.0),
    (3, "Tizen", ("Samsung",), 20.0),
    (3, "webOS", ("LG",), 12.0),
    (7, "tvOS", ("Apple",), 10.0),
    (7, "Fire OS", ("Amazon",), 15.0),
    (3, "Android TV", ("Google", "Sony", "TCL"), 8.0),
)
_UA = {
    "Windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "macOS": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.1 Safari/605.1.15",
    "Linux": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "iOS": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Android": "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
}
_SITE_SIZES = {
    2: (((300, 250), 30), ((728, 90), 25), ((160, 600), 10), ((300, 600), 12), ((970, 250), 8)),
    4: (((320, 50), 40), ((300, 250), 40), ((320, 100), 20)),
    5: (((300, 250), 40), ((728, 90), 35), ((320, 50), 25)),
}
_APP_SIZES = (((320, 50), 55), ((300, 250), 25), ((728, 90), 5), ((320, 480), 15))
_CONNECTIONS = {  # OpenRTB connectiontype: 1 ethernet, 2 wifi, 5 3G, 6 4G, 7 5G
    "fixed": ((1, 40), (2, 60)),
    "mobile": ((2, 50), (6, 33), (7, 13), (5, 4)),
}
# Share of traffic per UTC hour: a daily cycle peaking in the (American/European) evening.
_HOUR_WEIGHTS = tuple(1.0 + 0.8 * math.sin((h - 9) / 24 * 2 * math.pi) for h in range(24))


class _Picker:
    """Weighted choice by bisecting cumulative weights: one random() per draw."""

    def __init__(self, items: Sequence[Any], weights: Sequence[float]) -> None:
        self.items = list(items)
        self.cum = list(itertools.accumulate(weights))
        self.total = self.cum[-1]

    def __call__(self, rng: random.Random) -> Any:
        return self.items[bisect.bisect_right(self.cum, rng.random() * self.total)]


def _zipf_weights(n: int, s: float) -> list[float]:
    return [1.0 / (rank**s) for rank in range(1, n + 1)]


class TrafficGenerator:
    """Reproducible OpenRTB 2.6 requests and which DSPs bid on each (see the module docstring)."""

    def __init__(
        self,
        seed: int = 0,
        n_bidders: int = 16,
        *,
        stream: int = 0,
        at: float | None = None,
        n_sites: int = 20_000,
        n_apps: int = 8_000,
        n_publishers: int = 6_000,
        app_share: float = 0.5,
        ctv_app_share: float = 0.12,
        zipf_s: float = 1.05,
        start: float = DEFAULT_START,
        days: int = 7,
        min_rate: float = 0.02,
        max_rate: float = 0.20,
    ) -> None:
        if n_bidders < 1:
            raise ValueError("n_bidders must be at least 1")
        if not 0.0 < min_rate <= max_rate < 1.0:
            raise ValueError("need 0 < min_rate <= max_rate < 1")
        self.seed = seed
        self.start = start
        self.days = days
        # A server scores requests with its own clock; traffic it scores live is pinned to `at`
        # (usually now) so the hour and weekday that drive each DSP's ground truth match.
        self.at = at
        self.app_share = app_share
        self.bidders = [f"dsp-{i:02d}" for i in range(1, n_bidders + 1)]
        world = random.Random(f"rtbserve-world-{seed}")
        self._sites = self._make_properties(world, "site", n_sites, n_publishers, 0.0)
        self._apps = self._make_properties(world, "app", n_apps, n_publishers, ctv_app_share)
        self._pick_site = _Picker(self._sites, _zipf_weights(n_sites, zipf_s))
        self._pick_app = _Picker(self._apps, _zipf_weights(n_apps, zipf_s))
        self._pick_country = _Picker(_COUNTRIES, [c[1] for c in _COUNTRIES])
        self._pick_hour = _Picker(range(24), _HOUR_WEIGHTS)
        self._pick_site_device = _Picker(_SITE_DEVICES, [d[3] for d in _SITE_DEVICES])
        self._pick_ctv_device = _Picker(_CTV_DEVICES, [d[3] for d in _CTV_DEVICES])
        self._pick_size = {
            k: _Picker([s for s, _ in v], [w for _, w in v]) for k, v in _SITE_SIZES.items()
        }
        self._pick_app_size = _Picker([s for s, _ in _APP_SIZES], [w for _, w in _APP_SIZES])
        self._pick_conn = {
            k: _Picker([c for c, _ in v], [w for _, w in v]) for k, v in _CONNECTIONS.items()
        }
        self._dsps = [self._make_dsp(world, name, min_rate, max_rate) for name in self.bidders]
        self._build_tables()
        # The world (sites, DSPs) comes from `seed` alone; `stream` picks an independent sequence
        # of requests in it, so load tests can score traffic the model never trained on.
        suffix = f"-{stream}" if stream else ""
        self._rng = random.Random(f"rtbserve-traffic-{seed}{suffix}")
        self._coins = np.random.default_rng([seed, 0x5EED, stream] if stream else [seed, 0x5EED])
        self._buffer: list[SyntheticRequest] = []
        # Who-bid sets as bitmasks (when they fit in an int64) so equal sets are shared.
        self._bits = (1 << np.arange(n_bidders, dtype=np.int64)) if n_bidders <= 62 else None
        self._bid_sets: dict[int, frozenset[str]] = {}
        self._calibrate(min_rate, max_rate)

    # ---- the world -----------------------------------------------------------------------
    @staticmethod
    def _make_properties(
        rng: random.Random, kind: str, n: int, n_publishers: int, ctv_share: float
    ) -> list[_Property]:
        cat_pick = _Picker([c for c, _ in _CATS], [w for _, w in _CATS])
        app_cat_pick = _Picker([c for c, _ in _APP_CATS], [w for _, w in _APP_CATS])
        pub_weights = _zipf_weights(n_publishers, 0.9)
        pub_pick = _Picker(range(n_publishers), pub_weights)
        props = []
        for i in range(n):
            w1, w2 = rng.choice(_WORDS), rng.choice(_WORDS)
            pub = pub_pick(rng)
            if kind == "site":
                domain = f"{w1}{w2}{i}.com" if i % 3 else f"{w1}-{w2}{i}.net"
                cat = f"{cat_pick(rng)}-{rng.randint(1, 12)}"
                props.append(
                    _Property(
                        "site",
                        f"s{i}",
                        f"{w1.title()} {w2.title()}",
                        domain,
                        None,
                        f"pub-{pub}",
                        pub,
                        cat,
                        "web",
                    )
                )
            else:
                r = rng.random()
                ios_end = ctv_share + (1.0 - ctv_share) * 0.45
                platform = "ctv" if r < ctv_share else ("ios" if r < ios_end else "android")
                if platform == "ios" and rng.random() < 0.5:
                    bundle = str(300_000_000 + rng.randrange(1_500_000_000))  # App Store id
                else:
                    bundle = f"com.{w1}{pub % 97}.{w2}{i}"
                cat = app_cat_pick(rng) if platform != "ctv" else "IAB1-5"
                props.append(
                    _Property(
                        "app",
                        f"a{i}",
                        f"{w1.title()} {w2.title()}",
                        f"{w1}{w2}.com",
                        bundle,
                        f"pub-{pub}",
                        pub,
                        cat,
                        platform,
                    )
                )
        return props

    @staticmethod
    def _make_dsp(rng: random.Random, name: str, min_rate: float, max_rate: float) -> _Dsp:
        codes = [c[0] for c in _COUNTRIES]
        if rng.random() < 0.3:  # global buyer
            countries = dict.fromkeys(codes, 1.0)
        else:
            liked = set(rng.sample(codes[:10], rng.randint(1, 4)))
            if rng.random() < 0.6:
                liked.add("USA")
            countries = {c: 1.0 if c in liked else rng.uniform(0.0, 0.15) for c in codes}
        media_styles = (
            {"banner": 1.0, "video": 0.1, "native": 0.3},
            {"banner": 0.05, "video": 1.0, "native": 0.0},
            {"banner": 0.6, "video": 1.0, "native": 0.6},
            {"banner": 0.2, "video": 0.0, "native": 1.0},
            {"banner": 1.0, "video": 1.0, "native": 1.0},
        )
        media = dict(rng.choices(media_styles, weights=(4, 2, 2, 1, 2))[0])
        devices = {d: rng.choice((0.05, 0.4, 1.0, 1.0)) for d in (2, 3, 4, 5, 7)}
        cat_tiers = [c for c, _ in _CATS] + ["IAB9", "IAB1"]
        cats = {c: rng.choice((0.0, 0.3, 1.0, 1.0, 2.0)) for c in cat_tiers}
        inventory = rng.choice(
            ({"site": 1.0, "app": 1.0}, {"site": 1.0, "app": 0.1}, {"site": 0.15, "app": 1.0})
        )
        peak = rng.randrange(24)
        width = rng.choice((6, 10, 24))
        hours = [
            1.0 if min((h - peak) % 24, (peak - h) % 24) <= width // 2 else 0.25 for h in range(24)
        ]
        return _Dsp(
            name=name,
            scale=rng.uniform(min_rate, max_rate),  # replaced by _calibrate
            countries=countries,
            media=media,
            devices=devices,
            cats=cats,
            inventory=inventory,
            floor_tolerance=math.exp(rng.uniform(math.log(0.3), math.log(8.0))),
            hours=hours,
            blocked_residue=rng.randrange(20),
            needs_id=rng.random() < 0.4,
            gdpr_mult=rng.choice((1.0, 0.6, 0.1)),
            ctv_mult=rng.choice((0.0, 1.0, 2.0)),
        )

    def _build_tables(self) -> None:
        """Each DSP multiplier as a row per attribute value: a request gathers rows, multiplies."""
        dsps = self._dsps
        rows: list[list[float]] = []
        self._row: dict[tuple[str, Any], int] = {}

        def add(key: tuple[str, Any], values: list[float]) -> None:
            self._row[key] = len(rows)
            rows.append(values)

        for code, _, _ in _COUNTRIES:
            add(("country", code), [d.countries.get(code, 0.1) for d in dsps])
        for m in ("banner", "video", "native"):
            add(("media", m), [d.media.get(m, 0.0) for d in dsps])
        for dt in (2, 3, 4, 5, 7):
            add(("device", dt), [d.devices.get(dt, 0.5) for d in dsps])
        for c in {c for d in dsps for c in d.cats} | {c.split("-")[0] for c, _ in _APP_CATS}:
            add(("cat", c), [d.cats.get(c, 1.0) for d in dsps])
        for k in ("site", "app"):
            add(("kind", k), [d.inventory[k] for d in dsps])
        for h in range(24):
            add(("hour", h), [d.hours[h] for d in dsps])
        for r in range(20):
            add(("pub", r), [0.0 if d.blocked_residue == r else 1.0 for d in dsps])
        add(("id", False), [0.1 if d.needs_id else 1.0 for d in dsps])
        add(("gdpr", True), [d.gdpr_mult for d in dsps])
        add(("ctv", True), [d.ctv_mult for d in dsps])
        add(("one", None), [1.0] * len(dsps))
        self._table = np.array(rows, dtype=np.float64)
        self._tolerance = np.array([d.floor_tolerance for d in dsps])
        self._scale = np.ones(len(dsps))
        self._names = np.array(self.bidders, dtype=object)

    def _attr_rows(self, a: tuple[Any, ...]) -> list[int]:
        """The table rows whose product is a request's raw affinity for every DSP."""
        country, media, devicetype, cat_tier, kind, _, hour, pub, has_id, gdpr, ctv = a
        row = self._row
        one = row["one", None]
        return [
            row["country", country],
            row["media", media],
            row["device", devicetype],
            row.get(("cat", cat_tier), one),
            row["kind", kind],
            row["hour", hour],
            row["pub", pub % 20],
            one if has_id else row["id", False],
            row["gdpr", True] if gdpr else one,
            row["ctv", True] if ctv else one,
        ]

    def _probabilities(self, attrs: Sequence[tuple[Any, ...]]) -> npt.NDArray[np.float64]:
        """(len(attrs), n_bidders) bid probabilities, computed for a whole batch at once."""
        idx = np.array([self._attr_rows(a) for a in attrs], dtype=np.intp)
        floors = np.array([a[5] for a in attrs], dtype=np.float64)
        m = self._table[idx].prod(axis=1)
        m /= 1.0 + (floors[:, None] / self._tolerance[None, :]) ** 3
        p: npt.NDArray[np.float64] = np.minimum(m * self._scale, 0.95)
        return p

    def _calibrate(self, min_rate: float, max_rate: float) -> None:
        """Scale each DSP so its average bid probability equals a target drawn in the range."""
        saved, saved_at = self._rng, self.at
        # The world must not depend on `at`: calibrate on the whole daily cycle.
        self._rng, self.at = random.Random(f"rtbserve-calibrate-{self.seed}"), None
        probe = [self._draw()[2] for _ in range(4000)]
        self._rng, self.at = saved, saved_at
        mean = self._probabilities(probe).mean(axis=0)
        targets = random.Random(f"rtbserve-rates-{self.seed}")
        for i, dsp in enumerate(self._dsps):
            target = math.exp(targets.uniform(math.log(min_rate), math.log(max_rate)))
            dsp.scale = target / mean[i] if mean[i] > 0 else 0.0
        self._scale = np.array([d.scale for d in self._dsps])

    # ---- requests ------------------------------------------------------------------------
    def request(self) -> SyntheticRequest:
        if not self._buffer:
            self._fill()
        return self._buffer.pop()

    def requests(self, n: int) -> Iterator[SyntheticRequest]:
        for _ in range(n):
            yield self.request()

    def _fill(self) -> None:
        """Draw a fixed-size batch (so sequences do not depend on how callers consume them)."""
        draws = [self._draw() for _ in range(_BATCH)]
        p = self._probabilities([d[2] for d in draws])
        hits = self._coins.random(p.shape) < p
        out = []
        if self._bits is not None:
            cache = self._bid_sets
            for (req, ts, _), mask in zip(draws, (hits @ self._bits).tolist(), strict=True):
                bids = cache.get(mask)
                if bids is None:
                    bids = cache[mask] = frozenset(
                        n for i, n in enumerate(self.bidders) if mask >> i & 1
                    )
                out.append(SyntheticRequest(req, ts, bids))
        else:
            for (req, ts, _), row in zip(draws, hits, strict=True):
                out.append(SyntheticRequest(req, ts, frozenset(self._names[row].tolist())))
        out.reverse()  # pop() from the end hands them out in draw order
        self._buffer = out

    def _draw(self) -> tuple[dict[str, Any], float, tuple[Any, ...]]:
        rng = self._rng
        rnd = rng.random
        day = int(rnd() * self.days)
        hour = self._pick_hour(rng)
        ts = self.start + day * 86400.0 + hour * 3600.0 + float(int(rnd() * 3600.0))
        if self.at is not None:
            ts = self.at
            hour = int(ts % 86400.0 // 3600.0)
        country, _, regions = self._pick_country(rng)
        region = regions[int(rnd() * rnd() * len(regions))]  # skewed toward the first regions
        gdpr = 1 if country in _EU else 0
        price = _COUNTRY_PRICE.get(country, 0.4)

        is_app = rnd() < self.app_share
        prop: _Property = self._pick_app(rng) if is_app else self._pick_site(rng)
        ctv = prop.platform == "ctv"
        device: dict[str, Any]
        if ctv:
            devicetype, os_name, makes, _ = self._pick_ctv_device(rng)
            conn = self._pick_conn["fixed"](rng)
        elif is_app:
            devicetype = 4 if rnd() < 0.85 else 5
            os_name = "iOS" if prop.platform == "ios" else "Android"
            makes = ("Apple",) if os_name == "iOS" else ("Samsung", "Google", "Xiaomi", "Motorola")
            conn = self._pick_conn["mobile"](rng)
        else:
            devicetype, os_name, makes, _ = self._pick_site_device(rng)
            conn = self._pick_conn["fixed" if devicetype == 2 else "mobile"](rng)
        device = {
            "ua": _UA.get(os_name, "Mozilla/5.0"),
            "ip": f"203.0.113.{1 + int(rnd() * 254.0)}",  # documentation range
            "geo": {"country": country, "region": region, "type": 2},
            "devicetype": devicetype,
            "os": os_name,
            "js": 0 if is_app else 1,
            "language": "en",
            "connectiontype": conn,
        }
        if makes:
            device["make"] = makes[int(rnd() * len(makes))]
        if devicetype == 2 and os_name == "Windows" and rnd() < 0.4:
            device["sua"] = {
                "browsers": [{"brand": "Chromium", "version": ["131"]}],
                "platform": {"brand": "Windows", "version": ["10"]},
                "mobile": 0,
            }
        lmt = 0
        has_id = False
        if is_app:
            lmt = 1 if os_name == "iOS" and rnd() < 0.3 else 0
            device["lmt"] = lmt
            if lmt:
                device["ifa"] = "00000000-0000-0000-0000-000000000000"
            else:
                device["ifa"] = f"{rng.getrandbits(128):032x}"
                has_id = True
        if rnd() < 0.05:
            device["dnt"] = 1

        imps: list[dict[str, Any]]
        r = rnd()
        if ctv or r < (0.18 if is_app else 0.10):
            media = "video"
        elif r < 0.28:
            media = "native"
        else:
            media = "banner"
        floor_median = {"banner": 0.35, "video": 3.0, "native": 0.6}[media] * price
        if ctv:
            floor_median = 9.0 * price
        n_imp = 1 if is_app or rnd() < 0.8 else rng.randint(2, 3)
        imps = []
        floor = 0.0
        for k in range(n_imp):
            f = round(floor_median * math.exp(rng.gauss(0.0, 0.7)), 2)
            floor = max(floor, f)
            imp: dict[str, Any] = {
                "id": str(k + 1),
                "bidfloor": f,
                "bidfloorcur": "USD",
                "secure": 1 if rnd() < 0.96 else 0,
            }
            if media == "banner":
                if is_app:
                    w, h = self._pick_app_size(rng)
                else:
                    w, h = self._pick_size[devicetype](rng)
                fmt = [{"w": w, "h": h}]
                if (w, h) == (300, 250) and rnd() < 0.3:
                    fmt.append({"w": 300, "h": 600})
                imp["banner"] = {"format": fmt, "pos": 1 if rnd() < 0.6 else 3}
                if (w, h) == (320, 480):
                    imp["instl"] = 1
            elif media == "video":
                w, h = (1920, 1080) if ctv else ((640, 360) if not is_app else (320, 480))
                imp["video"] = {
                    "mimes": ["video/mp4"],
                    "minduration": 5,
                    "maxduration": 30 if rnd() < 0.7 else 60,
                    "protocols": [2, 3, 5, 6],
                    "w": w,
                    "h": h,
                    "plcmt": 1 if ctv or rnd() < 0.5 else 4,
                    "linearity": 1,
                }
                if is_app and not ctv:
                    imp["instl"] = 1
            else:
                imp["native"] = {
                    "request": '{"ver":"1.2","assets":[{"id":1,"title":{"len":90}}]}',
                    "ver": "1.2",
                }
            if rnd() < 0.05:
                imp["pmp"] = {
                    "private_auction": 0,
                    "deals": [
                        {"id": f"deal-{prop.publisher_index % 50}", "bidfloor": round(f * 1.5, 2)}
                    ],
                }
            imps.append(imp)

        inv: dict[str, Any] = {
            "id": prop.ident,
            "name": prop.name,
            "cat": [prop.cat],
            "publisher": {"id": prop.publisher, "name": prop.publisher},
        }
        user: dict[str, Any] = {}
        if is_app:
            inv["bundle"] = prop.bundle
            inv["domain"] = prop.domain
            inv["ver"] = "1.0"
        else:
            inv["domain"] = prop.domain
            inv["page"] = f"https://{prop.domain}/article/{int(rnd() * 10000.0)}"
            if rnd() < 0.7:
                user["id"] = f"{rng.getrandbits(96):024x}"
                has_id = True
        req: dict[str, Any] = {
            "id": f"{rng.getrandbits(128):032x}",
            "imp": imps,
            "app" if is_app else "site": inv,
            "device": device,
            "user": user,
            "at": 1,
            "tmax": 300,
            "cur": ["USD"],
            "source": {"tid": f"{rng.getrandbits(64):016x}"},
            "regs": {"gdpr": gdpr} if gdpr else {"us_privacy": "1YNN"} if country == "USA" else {},
        }
        cat_tier = prop.cat.split("-", 1)[0]
        attrs = (
            country,
            media,
            devicetype,
            cat_tier,
            prop.kind,
            floor,
            hour,
            prop.publisher_index,
            has_id,
            gdpr,
            ctv,
        )
        return req, ts, attrs
