"""The feature pipeline: one module turns bid requests into model rows for training and serving.

    pipeline = FeaturePipeline.fit(requests, bidders, bids=..., nows=...)   # training
    pipeline = FeaturePipeline.from_dict(manifest["features"])              # serving
    idx = pipeline.bidder_indices(["dsp-01", "dsp-07"])   # [] -> every bidder; UnknownBidderError
    x = pipeline.rows(req, idx, now=None, out=None)       # (len(idx), n_features) float32
    pipeline.request_vector(req, now)                     # the request-level part alone
    pipeline.matrix(requests, bidder_lists, nows)         # training: stacks rows()
    pipeline.bidders, .feature_names, .n_features, .request_feature_names, .n_request_features
    pipeline.to_dict() / FeaturePipeline.from_dict(d)     # exact round trip (the manifest)

rows() only reads the pipeline's tables (plus a bounded cache of codes for unseen long-tail
values), so one pipeline can serve many threads. Where the extension is built, a request dict
becomes its rows in one native call (`model_server/native/request_encode.h`); otherwise
`_extract` and `_encode_python` compute the values and the native `fill_rows`
(`request_path.h`) or numpy (`_fill_rows_numpy`) assembles the rows. Tests hold each native
step to its Python counterpart, bit for bit.

Every feature is a float32 and NaN means missing. A row is the request-level features
(formats, floors, inventory, device, geo, privacy signals, time, deals, and vocabulary codes for
categorical values) followed by the bidder's features: its index, its overall bid rate and its
smoothed historical bid rate for this request's publisher, property, country, device, format,
category, hour, floor band and connection type. Those per-bidder rates ("cross features") let a
small forest learn each bidder's targeting.

Categorical values become codes through vocabularies built by `fit`: the `top_k` most frequent
values get codes 0..k-1; unseen values of long-tail keys (publisher, domain, bundle, property) go
to one of `hash_buckets` buckets chosen by a stable CRC-32 (not `hash()`, which is salted per
process); unseen values of other keys share one "other" code. Hour and day of week come from the
`now` argument (seconds since the epoch, UTC) because bid requests carry no time; serving passes
the clock, training passes each example's timestamp.
"""

from __future__ import annotations

import base64
import math
import operator
import time
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from model_server.errors import UnknownBidderError

if TYPE_CHECKING:
    from model_server.native._forest import RequestEncoder

_fill_rows: Callable[..., None] | None
_RequestEncoder: type[RequestEncoder] | None
try:  # one C call instead of many Python and numpy steps per request, where it is built
    from model_server.native import _forest

    _fill_rows = _forest.fill_rows
    _RequestEncoder = _forest.RequestEncoder
except ImportError:  # pragma: no cover - depends on the build
    _fill_rows = None
    _RequestEncoder = None

FORMAT_VERSION = 1
_FLOAT32 = np.dtype(np.float32)
NAN = float("nan")
_BIDDER_COLS = 2  # each row's bidder part starts with the bidder's index and overall rate
# Long-tail values outside a vocabulary recur (Zipf); their codes are remembered per key up to
# this many entries, so memory stays bounded whatever values requests carry.
_UNSEEN_CACHE_LIMIT = 50_000

# Request-level numeric features, in row order (see _extract for where each comes from).
NUMERIC_FEATURES: tuple[str, ...] = (
    "n_imp",
    "has_banner",
    "has_video",
    "has_native",
    "has_audio",
    "banner_w",
    "banner_h",
    "n_sizes",
    "video_maxduration",
    "video_plcmt",
    "video_placement",
    "floor_max",
    "floor_min",
    "inventory",
    "devicetype",
    "connectiontype",
    "js",
    "has_user_id",
    "has_ifa",
    "dnt",
    "lmt",
    "hour",
    "dow",
    "secure",
    "instl",
    "has_pmp",
    "n_deals",
    "private_auction",
    "gdpr",
    "coppa",
    "us_privacy",
)


@dataclass(frozen=True)
class KeySpec:
    """A categorical key: how big its vocabulary is and how it is used."""

    top_k: int
    hash_buckets: int = 0  # 0: unseen values share one "other" code
    code_feature: bool = True  # emit `<name>_code` as a request feature
    cross: bool = False  # emit a per-bidder bid rate `rate_<name>`


# Categorical keys, in the order _extract returns them.
DEFAULT_KEYS: dict[str, KeySpec] = {
    "size": KeySpec(64, cross=True),
    "cur": KeySpec(16),
    "publisher": KeySpec(1000, 256, cross=True),
    "domain": KeySpec(1000, 256),
    "bundle": KeySpec(1000, 256),
    "property": KeySpec(1000, 256, code_feature=False, cross=True),
    "cat_tier1": KeySpec(64, cross=True),
    "cat": KeySpec(256),
    "os": KeySpec(32, cross=True),
    "make": KeySpec(64),
    "country": KeySpec(128, cross=True),
    "region": KeySpec(512),
    "media": KeySpec(8, code_feature=False, cross=True),
    "devicetype_key": KeySpec(16, code_feature=False, cross=True),
    "connectiontype_key": KeySpec(16, code_feature=False, cross=True),
    "hour_key": KeySpec(24, code_feature=False, cross=True),
    "floor_band": KeySpec(32, code_feature=False, cross=True),
}
KEY_NAMES: tuple[str, ...] = tuple(DEFAULT_KEYS)


def stable_bucket(value: str, buckets: int) -> int:
    """A bucket for `value` that is the same in every process (CRC-32, not the salted hash())."""
    return zlib.crc32(value.encode("utf-8", "surrogatepass")) % buckets


@dataclass
class Vocabulary:
    """Codes for one categorical key: 0..len(values)-1, then hash buckets or one "other" code."""

    values: list[str]
    hash_buckets: int = 0
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {v: i for i, v in enumerate(self.values)}

    @property
    def n_codes(self) -> int:
        """Codes a present value can get (the missing slot of a rate table is one more)."""
        return len(self.values) + max(self.hash_buckets, 1)

    def code(self, value: str) -> int:
        c = self.index.get(value)
        if c is not None:
            return c
        if self.hash_buckets:
            return len(self.values) + stable_bucket(value, self.hash_buckets)
        return len(self.values)

    @classmethod
    def from_counts(cls, counts: Counter[str], spec: KeySpec, min_count: int) -> Vocabulary:
        # Most frequent first; ties broken by value so the result is deterministic.
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        values = [v for v, n in ranked[: spec.top_k] if n >= min_count]
        return cls(values, spec.hash_buckets)


def _num(x: Any) -> float:
    t = type(x)
    if t is int or t is float or t is bool:
        return float(x)
    return NAN


def _flag(x: Any) -> float:
    return 1.0 if x else 0.0


def _host(url: Any) -> str | None:
    """Host of a page URL, for sites that send `page` but no `domain`."""
    if type(url) is not str:
        return None
    rest = url.strip().split("://", 1)[-1]
    host = rest.split("/", 1)[0].split("?", 1)[0].split(":", 1)[0]
    return host or None


def _norm_domain(d: Any) -> str | None:
    if type(d) is not str or not d:
        return None
    d = d.strip().lower()
    return d[4:] if d.startswith("www.") else d or None


def _first_str(xs: Any) -> str | None:
    if type(xs) is list and xs:
        x = xs[0]
        if type(x) is str and x:
            return x
        if type(x) is int:  # IAB content taxonomy 2.x/3.x ids may arrive as numbers
            return str(x)
    return None


_EMPTY: dict[str, Any] = {}


_INT_STR = tuple(str(i) for i in range(64))


def _small_int_str(x: float) -> str:
    i = int(x)
    return _INT_STR[i] if 0 <= i < 64 else str(i)


# Floors above this are all in the top band (30 is reached near $232): a hostile 1e308 would
# otherwise make the log infinite.
FLOOR_BAND_TOP = 1e4


def _floor_band(f: float) -> str:
    # Roughly 1.4x steps from $0.01 up: fine enough for floor tolerance, small vocabulary.
    if not f > 0.0:
        return "0"
    if f > FLOOR_BAND_TOP:  # the top band; also keeps an infinite log out of int()
        return _INT_STR[30]
    return _INT_STR[max(0, min(30, int(2.0 * math.log2(f * 100.0)) + 1))]


def _extract(req: Mapping[str, Any], now: float) -> tuple[list[float], list[str | None]]:
    """Numeric features (NUMERIC_FEATURES order) and categorical values (KEY_NAMES order)."""
    imps = req.get("imp")
    if type(imps) is not list:
        imps = []
    banner = video = native = audio = 0.0
    bw = bh = vdur = vplcmt = vplacement = NAN
    n_sizes = 0
    fmax = -math.inf
    fmin = math.inf
    secure = NAN
    instl = has_pmp = private = 0.0
    n_deals = 0
    size: str | None = None
    cur: str | None = None
    for imp in imps:
        if type(imp) is not dict:
            continue
        b = imp.get("banner")
        if type(b) is dict:
            banner = 1.0
            fmt = b.get("format")
            w = b.get("w")
            h = b.get("h")
            if type(fmt) is list:
                n_sizes += len(fmt)
                if (w is None or h is None) and fmt and type(fmt[0]) is dict:
                    w = fmt[0].get("w")
                    h = fmt[0].get("h")
            elif w is not None:
                n_sizes += 1
            if size is None and (type(w) is int or type(w) is float):
                bw = _num(w)
                bh = _num(h)
                size = None if math.isnan(bh) else f"{int(bw)}x{int(bh)}"
        v = imp.get("video")
        if type(v) is dict:
            video = 1.0
            d = v.get("maxduration")
            if d is None:
                rq = v.get("rqddurs")  # 2.6: exact durations instead of a range
                if type(rq) is list and rq:
                    d = max((x for x in rq if type(x) is int), default=None)
            dv = _num(d)
            if not math.isnan(dv) and not vdur >= dv:  # max over imps, ignoring missing
                vdur = dv
            if math.isnan(vplcmt):
                vplcmt = _num(v.get("plcmt"))
            if math.isnan(vplacement):
                vplacement = _num(v.get("placement"))
        if type(imp.get("native")) is dict:
            native = 1.0
        if type(imp.get("audio")) is dict:
            audio = 1.0
        # OpenRTB's default bidfloor is 0.
        bf = imp.get("bidfloor", 0.0)
        f = float(bf) if type(bf) is int or type(bf) is float else 0.0
        fmax = max(fmax, f)
        fmin = min(fmin, f)
        if cur is None:
            c = imp.get("bidfloorcur")
            cur = c.upper() if type(c) is str and c else "USD"
        s = imp.get("secure")
        if type(s) is int and (math.isnan(secure) or s > secure):
            secure = float(s)
        if imp.get("instl") == 1:
            instl = 1.0
        pmp = imp.get("pmp")
        if type(pmp) is dict:
            deals = pmp.get("deals")
            if type(deals) is list and deals:
                has_pmp = 1.0
                n_deals += len(deals)
            if pmp.get("private_auction") == 1:
                private = 1.0
    if fmax == -math.inf:
        fmax = fmin = NAN

    site = req.get("site")
    app = req.get("app")
    inv_obj: dict[str, Any]
    domain = bundle = None
    if type(site) is dict:
        inventory = 0.0
        inv_obj = site
        domain = _norm_domain(site.get("domain")) or _norm_domain(_host(site.get("page")))
        prop = domain
    elif type(app) is dict:
        inventory = 1.0
        inv_obj = app
        b = app.get("bundle")
        bundle = b if type(b) is str and b else None
        domain = _norm_domain(app.get("domain"))
        prop = bundle or domain
    elif type(req.get("dooh")) is dict:  # 2.6 digital out-of-home
        inventory = 2.0
        inv_obj = req["dooh"]
        domain = _norm_domain(inv_obj.get("domain"))
        prop = domain
    else:
        inventory = NAN
        inv_obj = _EMPTY
        prop = None
    pub = inv_obj.get("publisher")
    if type(pub) is not dict:
        pub = _EMPTY
    pid = pub.get("id")
    publisher = pid if type(pid) is str and pid else (str(pid) if type(pid) is int else None)
    cat = (
        _first_str(inv_obj.get("cat"))
        or (type(content := inv_obj.get("content")) is dict and _first_str(content.get("cat")))
        or _first_str(pub.get("cat"))
    )
    cat_tier1 = cat.split("-", 1)[0] if cat is not None and cat.startswith("IAB") else cat

    device = req.get("device")
    if type(device) is not dict:
        device = _EMPTY
    devicetype = _num(device.get("devicetype"))
    conn = _num(device.get("connectiontype"))
    os_ = device.get("os")
    if type(os_) is str and os_:
        os_name: str | None = os_.lower()
    else:  # 2.6 structured user agent
        sua = device.get("sua")
        platform = sua.get("platform") if type(sua) is dict else None
        brand = platform.get("brand") if type(platform) is dict else None
        os_name = brand.lower() if type(brand) is str and brand else None
    mk = device.get("make")
    make = mk.lower() if type(mk) is str and mk else None
    user = req.get("user")
    if type(user) is not dict:
        user = _EMPTY
    geo = device.get("geo")
    if type(geo) is not dict:
        geo = user.get("geo")
        if type(geo) is not dict:
            geo = _EMPTY
    cc = geo.get("country")
    country = cc.upper() if type(cc) is str and cc else None
    rg = geo.get("region")
    region = f"{country}-{rg.upper()}" if country and type(rg) is str and rg else None
    uid = user.get("id") or user.get("buyeruid")
    ifa = device.get("ifa")
    has_ifa = 1.0 if type(ifa) is str and ifa.strip("0-") else 0.0
    regs = req.get("regs")
    if type(regs) is not dict:
        regs = _EMPTY
    gdpr = regs.get("gdpr")
    usp = regs.get("us_privacy")
    regs_ext = regs.get("ext")  # OpenRTB 2.5 kept these in regs.ext
    if type(regs_ext) is dict:
        if gdpr is None:
            gdpr = regs_ext.get("gdpr")
        usp = usp or regs_ext.get("us_privacy")

    hour = int(now // 3600.0 % 24.0)
    dow = int((now // 86400.0 + 3.0) % 7.0)  # 1970-01-01 was a Thursday; Monday = 0
    if video:
        media = "video"
    elif banner:
        media = "banner"
    elif native:
        media = "native"
    elif audio:
        media = "audio"
    else:
        media = None

    nums = [
        float(len(imps)),
        banner,
        video,
        native,
        audio,
        bw,
        bh,
        float(n_sizes),
        vdur,
        vplcmt,
        vplacement,
        fmax,
        fmin,
        inventory,
        devicetype,
        conn,
        _num(device.get("js")),
        _flag(uid),
        has_ifa,
        _num(device.get("dnt")),
        _num(device.get("lmt")),
        float(hour),
        float(dow),
        secure,
        instl,
        has_pmp,
        float(n_deals),
        private,
        _num(gdpr),
        _num(regs.get("coppa")),
        _flag(usp),
    ]
    keys = [
        size,
        cur,
        publisher,
        domain,
        bundle,
        prop,
        cat_tier1,
        cat,
        os_name,
        make,
        country,
        region,
        media,
        None if math.isnan(devicetype) else _small_int_str(devicetype),
        None if math.isnan(conn) else _small_int_str(conn),
        _INT_STR[hour],
        None if math.isnan(fmax) else _floor_band(fmax),
    ]
    return nums, keys


def _picker(positions: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """itemgetter that always returns a tuple (itemgetter(i) alone returns the bare item)."""
    if len(positions) == 1:
        (only,) = positions
        return lambda seq: (seq[only],)
    if not positions:
        return lambda seq: ()
    return operator.itemgetter(*positions)


def _encode_f32(a: npt.NDArray[np.float32]) -> dict[str, Any]:
    data = np.ascontiguousarray(a, dtype="<f4").tobytes()
    return {"dtype": "<f4", "shape": list(a.shape), "data": base64.b64encode(data).decode()}


def _decode_f32(d: Mapping[str, Any]) -> npt.NDArray[np.float32]:
    if d.get("dtype") != "<f4":
        raise ValueError(f"unsupported array dtype {d.get('dtype')!r}")
    raw = base64.b64decode(d["data"])
    arr = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(d["shape"])
    return np.ascontiguousarray(arr)


def key_columns(
    requests: Sequence[Mapping[str, Any]], nows: Sequence[float]
) -> list[tuple[str | None, ...]]:
    """The categorical values of many requests, one column per key (KEY_NAMES order)."""
    columns = list(
        zip(*(_extract(r, t)[1] for r, t in zip(requests, nows, strict=True)), strict=True)
    )
    return columns or [() for _ in KEY_NAMES]


@dataclass
class VocabularyCounts:
    """How often each categorical value occurs, per key: the first pass of `fit`.

    Counts of disjoint sets of requests add (`+`) to the counts of their union, and the
    vocabularies depend only on the counts, so any partitioning of the data fits the same.
    """

    counts: dict[str, Counter[str]]

    @classmethod
    def of_columns(cls, columns: Sequence[Sequence[str | None]]) -> VocabularyCounts:
        # None (a missing value) gets no code, so it is not counted.
        return cls(
            {k: Counter(v for v in columns[i] if v is not None) for i, k in enumerate(KEY_NAMES)}
        )

    def __add__(self, other: VocabularyCounts) -> VocabularyCounts:
        return VocabularyCounts({k: self.counts[k] + other.counts[k] for k in KEY_NAMES})

    def pipeline(
        self,
        bidders: Sequence[str],
        specs: Mapping[str, KeySpec] | None = None,
        min_count: int = 5,
        smoothing: float = 20.0,
    ) -> FeaturePipeline:
        """A pipeline with these counts' vocabularies and no rate tables yet (`with_rates`)."""
        spec_map = dict(specs or DEFAULT_KEYS)
        vocabs = {
            k: Vocabulary.from_counts(self.counts[k], spec_map[k], min_count) for k in KEY_NAMES
        }
        return FeaturePipeline(bidders, vocabs, specs=spec_map, smoothing=smoothing)


@dataclass
class RateCounts:
    """Offers and bids per bidder (`offered`, `won`) and per cross-rate slot (`seen`, `bid`):
    the second pass of `fit`. Integers, so partitions' counts add exactly in any order."""

    offered: npt.NDArray[np.int64]
    won: npt.NDArray[np.int64]
    seen: npt.NDArray[np.int64]
    bid: npt.NDArray[np.int64]

    def __add__(self, other: RateCounts) -> RateCounts:
        return RateCounts(
            self.offered + other.offered,
            self.won + other.won,
            self.seen + other.seen,
            self.bid + other.bid,
        )


class FeaturePipeline:
    """Turns bid requests into float32 rows; build with `fit`, persist with `to_dict`."""

    def __init__(
        self,
        bidders: Sequence[str],
        vocabularies: Mapping[str, Vocabulary],
        *,
        specs: Mapping[str, KeySpec] | None = None,
        bidder_rates: npt.NDArray[np.float32] | None = None,
        cross_rates: npt.NDArray[np.float32] | None = None,
        smoothing: float = 0.0,
    ) -> None:
        if len(set(bidders)) != len(bidders) or not bidders:
            raise ValueError("bidders must be a non-empty list of distinct names")
        self.bidders: list[str] = list(bidders)
        self._bidder_index = {b: i for i, b in enumerate(self.bidders)}
        self.specs: dict[str, KeySpec] = dict(specs or DEFAULT_KEYS)
        if tuple(self.specs) != KEY_NAMES:
            raise ValueError(f"categorical keys must be {KEY_NAMES}")
        self.vocabularies: dict[str, Vocabulary] = {k: vocabularies[k] for k in KEY_NAMES}
        self.smoothing = smoothing
        self._code_keys = [i for i, k in enumerate(KEY_NAMES) if self.specs[k].code_feature]
        self._cross_keys = [i for i, k in enumerate(KEY_NAMES) if self.specs[k].cross]
        self._vocab_list = [self.vocabularies[k] for k in KEY_NAMES]
        # Slot layout of the cross-rate table: per cross key, its codes then one "missing" slot.
        self._offsets: list[int] = []
        total = 0
        for i in self._cross_keys:
            self._offsets.append(total)
            total += self._vocab_list[i].n_codes + 1
        self._n_slots = total
        # Per key, everything _encode needs, so the hot loop does no attribute lookups. Offsets
        # are columns of _bidder_table, whose first _BIDDER_COLS columns are index and rate.
        offset_of = {
            i: _BIDDER_COLS + off for i, off in zip(self._cross_keys, self._offsets, strict=True)
        }
        self._plan: list[tuple[dict[str, int], int, int, bool, int, int]] = []
        for i, k in enumerate(KEY_NAMES):
            voc = self._vocab_list[i]
            off = offset_of.get(i, -1)
            self._plan.append(
                (
                    voc.index,
                    len(voc.values),
                    voc.hash_buckets,
                    self.specs[k].code_feature,
                    off,
                    off + voc.n_codes,
                )
            )
        self._code_pick = _picker(self._code_keys)
        self._cross_pick = _picker(self._cross_keys)
        self._code_maps: list[dict[str | None, Any]] = []
        self._code_unseen: list[tuple[int, int, int]] = []
        for i in self._code_keys:
            index, n_values, buckets = self._plan[i][:3]
            self._code_maps.append({**{v: float(c) for v, c in index.items()}, None: NAN})
            self._code_unseen.append((0, n_values, buckets))
        self._cross_maps: list[dict[str | None, Any]] = []
        self._cross_unseen: list[tuple[int, int, int]] = []
        for i in self._cross_keys:
            index, n_values, buckets, _, column, missing_column = self._plan[i]
            self._cross_maps.append(
                {**{v: column + c for v, c in index.items()}, None: missing_column}
            )
            self._cross_unseen.append((column, n_values, buckets))
        self._bidder_head = list(range(_BIDDER_COLS))
        n_b = len(self.bidders)
        if bidder_rates is None:
            bidder_rates = np.zeros(n_b, dtype=np.float32)
        if cross_rates is None:
            cross_rates = np.zeros((n_b, total), dtype=np.float32)
        if bidder_rates.shape != (n_b,) or cross_rates.shape != (n_b, total):
            raise ValueError(
                f"rate tables have shapes {bidder_rates.shape}/{cross_rates.shape}, "
                f"expected {(n_b,)}/{(n_b, total)}"
            )
        self.bidder_rates = np.ascontiguousarray(bidder_rates, dtype=np.float32)
        self.cross_rates = np.ascontiguousarray(cross_rates, dtype=np.float32)
        # Every bidder column of every bidder: [index, overall rate, cross-rate slots...].
        self._bidder_table = np.ascontiguousarray(
            np.column_stack(
                [np.arange(n_b, dtype=np.float32), self.bidder_rates, self.cross_rates]
            ).astype(np.float32)
        )
        self._all_bidders = list(range(n_b))

        self.request_feature_names: list[str] = list(NUMERIC_FEATURES) + [
            f"{KEY_NAMES[i]}_code" for i in self._code_keys
        ]
        self.n_request_features = len(self.request_feature_names)
        cross_names = [f"rate_{KEY_NAMES[i]}" for i in self._cross_keys]
        self.feature_names: list[str] = [
            *self.request_feature_names,
            "bidder",
            "bidder_rate",
            *cross_names,
        ]
        self.n_features = len(self.feature_names)
        self._cross_start = self.n_request_features + 2
        self._native = self._native_encoder()

    def _native_encoder(self) -> RequestEncoder | None:
        """_extract + _encode (+ fill_rows) in one C call per request, over the same lookup
        dicts (so both paths share the unseen-value cache); None where it is not built."""
        if _RequestEncoder is None:
            return None

        def plan(keys: list[int], maps: list[dict[str | None, Any]], unseen: Any) -> list[Any]:
            return [(k, m, *u) for k, m, u in zip(keys, maps, unseen, strict=True)]

        return _RequestEncoder(
            NUMERIC_FEATURES,
            KEY_NAMES,
            plan(self._code_keys, self._code_maps, self._code_unseen),
            plan(self._cross_keys, self._cross_maps, self._cross_unseen),
            _BIDDER_COLS,
            _UNSEEN_CACHE_LIMIT,
            self._bidder_table,
        )

    @property
    def native_encoder(self) -> RequestEncoder | None:
        """The C encoder `rows` uses for dict requests (None where it is not built)."""
        return self._native

    def __getstate__(self) -> dict[str, Any]:
        """Pickles as before: the native encoder is rebuilt over the unpickled tables."""
        state = dict(self.__dict__)
        state["_native"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._native = self._native_encoder()

    # ---- bidders -------------------------------------------------------------------------
    def bidder_indices(self, names: Sequence[str]) -> list[int]:
        """Model indices of `names` (an empty list means every bidder, in the model's order)."""
        if not names:
            return list(self._all_bidders)
        index = self._bidder_index
        try:
            return [index[n] for n in names]
        except KeyError:
            raise UnknownBidderError([n for n in names if n not in index]) from None

    # ---- per request ---------------------------------------------------------------------
    def _encode(self, req: Mapping[str, Any], now: float | None) -> tuple[list[float], list[int]]:
        """Request features (numeric, then codes) and the _bidder_table columns to gather."""
        t = time.time() if now is None else now
        if self._native is not None and type(req) is dict:
            return self._native.encode(req, t)
        return self._encode_python(req, t)

    def _encode_python(self, req: Mapping[str, Any], now: float) -> tuple[list[float], list[int]]:
        """What the native encoder does, in Python: the fallback and its reference.

        Vocabulary lookups run as C-level map(dict.get) over precomputed dicts (None, i.e. a
        missing value, is a key too); only values not seen before fall back to Python, to get
        their hash bucket or "other" code.
        """
        nums, keys = _extract(req, now)
        code_values = self._code_pick(keys)
        codes: list[Any] = list(map(dict.get, self._code_maps, code_values))
        if None in codes:
            self._fill_unseen(codes, code_values, self._code_maps, self._code_unseen)
        nums += codes
        cross_values = self._cross_pick(keys)
        cols: list[Any] = list(map(dict.get, self._cross_maps, cross_values))
        if None in cols:
            self._fill_unseen(cols, cross_values, self._cross_maps, self._cross_unseen)
        return nums, self._bidder_head + cols

    @staticmethod
    def _fill_unseen(
        out: list[Any],
        values: Sequence[str | None],
        maps: Sequence[dict[str | None, Any]],
        unseen: Sequence[tuple[int, int, int]],
    ) -> None:
        """Codes of values outside the vocabulary; remembered (up to a bound) for next time."""
        for j, c in enumerate(out):
            if c is None:
                base, n_values, buckets = unseen[j]
                v = values[j]
                assert v is not None  # None is in every lookup dict
                out[j] = base + n_values + (stable_bucket(v, buckets) if buckets else 0)
                if len(maps[j]) < _UNSEEN_CACHE_LIMIT + n_values:
                    maps[j][v] = out[j]

    def request_vector(self, req: Mapping[str, Any], now: float | None = None) -> np.ndarray:
        """The request-level features (float32, `n_request_features` long)."""
        nums, _ = self._encode(req, now)
        return np.array(nums, dtype=np.float32)

    def rows(
        self,
        req: Mapping[str, Any],
        bidder_idx: Sequence[int],
        now: float | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """One row per bidder in `bidder_idx`: (len(bidder_idx), n_features) float32, C order.

        `now` is seconds since the epoch (default: the clock). `out`, when given, must be a
        C-contiguous float32 array of exactly that shape; it is filled and returned.
        """
        n = len(bidder_idx)
        if out is None:
            out = np.empty((n, self.n_features), dtype=np.float32)
        elif out.shape != (n, self.n_features) or (
            out.dtype is not _FLOAT32 and out.dtype != np.float32  # `is`: the cheap common case
        ):
            raise ValueError(f"out must be float32 of shape {(n, self.n_features)}")
        t = time.time() if now is None else now
        if self._native is not None and type(req) is dict and out.flags.c_contiguous:
            self._native.rows(req, t, bidder_idx, out)
            return out
        nums, cols = self._encode(req, t)
        if _fill_rows is not None and out.flags.c_contiguous:
            _fill_rows(nums, cols, bidder_idx, self._bidder_table, out)
        else:
            self._fill_rows_numpy(nums, cols, bidder_idx, out)
        return out

    def _fill_rows_numpy(
        self, nums: list[float], cols: list[int], bidder_idx: Sequence[int], out: np.ndarray
    ) -> None:
        """What the native fill_rows does, in numpy: the fallback and its reference."""
        r = self.n_request_features
        with np.errstate(over="ignore"):  # a value past float32 becomes inf, as in C
            out[:, :r] = np.array(nums, dtype=np.float32)  # broadcast into every row
        # Bidder columns in one gather: `cols` picks index, overall rate and the cross rates.
        out[:, r:] = self._bidder_table[np.asarray(bidder_idx, dtype=np.intp)[:, None], cols]

    def matrix(
        self,
        requests: Sequence[Mapping[str, Any]],
        bidder_lists: Sequence[Sequence[str]] | None = None,
        nows: Sequence[float] | None = None,
    ) -> np.ndarray:
        """Training rows for many requests: rows() of each, stacked (None: all bidders each)."""
        idx_lists = [
            self.bidder_indices(bidder_lists[i] if bidder_lists is not None else [])
            for i in range(len(requests))
        ]
        total = sum(len(ix) for ix in idx_lists)
        out = np.empty((total, self.n_features), dtype=np.float32)
        start = 0
        for i, req in enumerate(requests):
            n = len(idx_lists[i])
            now = nows[i] if nows is not None else None
            self.rows(req, idx_lists[i], now, out=out[start : start + n])
            start += n
        return out

    # ---- fitting -------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        requests: Iterable[Mapping[str, Any]],
        bidders: Sequence[str],
        *,
        bids: Iterable[Collection[str]] | None = None,
        candidates: Iterable[Sequence[str]] | None = None,
        nows: Iterable[float] | None = None,
        specs: Mapping[str, KeySpec] | None = None,
        min_count: int = 5,
        smoothing: float = 20.0,
    ) -> FeaturePipeline:
        """Build vocabularies (and, given `bids`, per-bidder rate tables) from training data.

        `bids[i]` is who bid on request i among `candidates[i]` (default: every bidder);
        `nows[i]` is its timestamp (default: the clock). Without `bids` the rate features are 0.
        The fit is two sums of counts (`VocabularyCounts`, then `RateCounts`), so a fit over
        partitions whose counts are added (`model_server.dask_training`) is this one exactly.
        """
        reqs = list(requests)
        times = list(nows) if nows is not None else [time.time()] * len(reqs)
        if len(times) != len(reqs):
            raise ValueError("nows must have one timestamp per request")
        spec_map = dict(specs or DEFAULT_KEYS)
        columns = key_columns(reqs, times)
        pipe = VocabularyCounts.of_columns(columns).pipeline(
            bidders, spec_map, min_count, smoothing
        )
        if bids is None:
            return pipe
        bid_list = list(bids)
        if len(bid_list) != len(reqs):
            raise ValueError("bids must have one entry per request")
        cand_list = list(candidates) if candidates is not None else None
        if cand_list is not None and len(cand_list) != len(reqs):
            raise ValueError("candidates must have one entry per request")
        return pipe.with_rates(pipe.rate_counts(columns, bid_list, cand_list))

    def rate_counts(
        self,
        columns: Sequence[Sequence[str | None]],
        bids: Sequence[Collection[str]],
        candidates: Sequence[Sequence[str]] | None,
    ) -> RateCounts:
        """Offers and bids per bidder, overall and per cross-rate slot, of these requests.

        `columns` is `key_columns` of the requests; a bid from a bidder that was not offered the
        request is ignored.
        """
        n_req = len(bids)
        n_b = len(self.bidders)
        offered = np.zeros((n_req, n_b), dtype=np.int64)
        if candidates is None:
            offered[:] = 1
        else:
            offered[self._pair_index(candidates)] = 1
        won = np.zeros((n_req, n_b), dtype=np.int64)
        won[self._pair_index(bids)] = 1
        won *= offered
        seen = np.zeros((n_b, self._n_slots), dtype=np.int64)
        bid = np.zeros((n_b, self._n_slots), dtype=np.int64)
        size = self._n_slots * n_b
        for i in self._cross_keys:
            slots = np.array(self._column_slots(i, columns[i]), dtype=np.intp)
            # Counts per (slot, bidder) in one bincount over slot * n_b + bidder; each cross
            # key owns its own slots, so the keys' counts add into one table.
            flat = (slots[:, None] * n_b + np.arange(n_b)).ravel()
            seen += np.bincount(flat, offered.ravel(), size).astype(np.int64).reshape(-1, n_b).T
            bid += np.bincount(flat, won.ravel(), size).astype(np.int64).reshape(-1, n_b).T
        return RateCounts(offered.sum(axis=0), won.sum(axis=0), seen, bid)

    def with_rates(self, counts: RateCounts) -> FeaturePipeline:
        """This pipeline with the smoothed bid-rate tables of `counts` (see `rate_counts`)."""
        n_b = len(self.bidders)
        if counts.seen.shape != (n_b, self._n_slots):
            raise ValueError(f"rate counts of shape {counts.seen.shape} do not fit this pipeline")
        n_off = counts.offered.astype(np.float64)
        prior = np.divide(counts.won, n_off, out=np.zeros(n_b), where=n_off > 0)
        # Slots a bidder was never offered in training keep the bidder's overall rate.
        table = np.repeat(prior[:, None], self._n_slots, axis=1)
        mask = counts.seen > 0
        smoothed = (counts.bid + self.smoothing * prior[:, None]) / (counts.seen + self.smoothing)
        table[mask] = smoothed[mask]
        return FeaturePipeline(
            self.bidders,
            self.vocabularies,
            specs=self.specs,
            bidder_rates=prior.astype(np.float32),
            cross_rates=table.astype(np.float32),
            smoothing=self.smoothing,
        )

    def _pair_index(
        self, name_lists: Sequence[Collection[str]]
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """(row, bidder index) of every name in every list; UnknownBidderError for strangers."""
        index = self._bidder_index
        rows: list[int] = []
        cols: list[int] = []
        for i, names in enumerate(name_lists):
            for name in names:
                c = index.get(name)
                if c is None:
                    raise UnknownBidderError([name])
                rows.append(i)
                cols.append(c)
        return np.array(rows, dtype=np.intp), np.array(cols, dtype=np.intp)

    def _column_slots(self, key: int, values: Sequence[str | None]) -> list[int]:
        """Cross-rate table slots of one key's values (the same mapping _encode uses)."""
        index, n_values, buckets, _, column, missing_column = self._plan[key]
        offset = column - _BIDDER_COLS
        missing = missing_column - _BIDDER_COLS
        out = []
        for v in values:
            if v is None:
                out.append(missing)
                continue
            c = index.get(v)
            if c is None:
                c = n_values + stable_bucket(v, buckets) if buckets else n_values
            out.append(offset + c)
        return out

    # ---- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description that `from_dict` turns back into an identical pipeline."""
        return {
            "format_version": FORMAT_VERSION,
            "bidders": list(self.bidders),
            "feature_names": list(self.feature_names),
            "keys": {
                k: {
                    "top_k": self.specs[k].top_k,
                    "hash_buckets": self.specs[k].hash_buckets,
                    "code_feature": self.specs[k].code_feature,
                    "cross": self.specs[k].cross,
                    "values": list(self.vocabularies[k].values),
                }
                for k in KEY_NAMES
            },
            "smoothing": self.smoothing,
            "bidder_rates": _encode_f32(self.bidder_rates),
            "cross_rates": _encode_f32(self.cross_rates),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeaturePipeline:
        """Rebuild a pipeline from `to_dict()`; raises ValueError when `d` does not describe one."""
        try:
            if d["format_version"] != FORMAT_VERSION:
                raise ValueError(
                    f"feature spec format_version {d['format_version']!r} is not supported "
                    f"(this build reads {FORMAT_VERSION})"
                )
            keys = d["keys"]
            if set(keys) != set(KEY_NAMES):  # manifests store keys sorted
                raise ValueError(f"feature spec keys {sorted(keys)} != {sorted(KEY_NAMES)}")
            specs = {
                k: KeySpec(
                    int(keys[k]["top_k"]),
                    int(keys[k]["hash_buckets"]),
                    bool(keys[k]["code_feature"]),
                    bool(keys[k]["cross"]),
                )
                for k in KEY_NAMES
            }
            vocabs = {
                k: Vocabulary([str(v) for v in keys[k]["values"]], specs[k].hash_buckets)
                for k in KEY_NAMES
            }
            pipe = cls(
                [str(b) for b in d["bidders"]],
                vocabs,
                specs=specs,
                bidder_rates=_decode_f32(d["bidder_rates"]),
                cross_rates=_decode_f32(d["cross_rates"]),
                smoothing=float(d["smoothing"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"invalid feature spec: {type(exc).__name__}: {exc}") from None
        if d.get("feature_names") is not None and list(d["feature_names"]) != pipe.feature_names:
            raise ValueError("feature spec's feature_names do not match this build's features")
        return pipe
