"""A deterministic clickstream simulator: the embedded log source.

What it models, and why:

* A catalog of departments > product types, brands, titles, descriptions and
  prices, with Zipf-like popularity, and items launched over time (new catalog
  rows on later days, plus price changes).
* Users with a few latent interests (product types) that drift day by day to
  neighbouring types, and a heavy-tailed activity level.
* Sessions: a user browses items; each next item follows the previous item's
  successors (complements and close substitutes) with probability
  ``sequential_strength``, otherwise it is drawn from the user's interests.
  That gives real sequential structure: a first-order Markov model beats
  popularity on held-out next items, so a sequence model has something to learn.
  Each view may go down the funnel view -> click -> cart -> purchase -> rate.
* Noise, all counted in each partition's ``_manifest.json`` so later stages can
  prove they handled it: exact duplicates, near-duplicate repeated views, bot
  users (long, fast, random sessions of clean JSON), late events (stamped 1-3 days before the
  partition's day), valid timestamps with non-UTC offsets, and malformed lines
  of every kind in ``reaflow.contracts.Reason`` (one defect per line, so each
  has exactly one expected quarantine reason).

Everything is a function of ``(seed, day)``: any day can be generated alone and
comes out byte-identical; lines stream to disk, so memory does not grow with
the number of events.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from bisect import bisect
from dataclasses import dataclass, field
from itertools import accumulate

import numpy as np

from jobs.ingest.writer import RawPartitionWriter
from reaflow.contracts import Reason, format_ts
from reaflow.errors import InputError
from reaflow.lake import Dataset, Lake, ds_str
from reaflow.settings import Settings, SimulatorSettings

SOURCE = "simulator"
SUCCESSORS = 4
MAX_SESSION_VIEWS = 30
BOT_SESSION_VIEWS = (60, 200)

_DEPARTMENTS: dict[str, tuple[list[str], list[str]]] = {
    "Beauty": (["Shampoo", "Conditioner", "Face Cream", "Lipstick", "Mascara", "Nail Polish", "Perfume", "Sunscreen", "Hair Dryer", "Body Lotion"],
               ["daily care", "sensitive skin", "travel", "gifting", "salon results at home"]),
    "Kitchen": (["Chef Knife", "Frying Pan", "Blender", "Coffee Grinder", "Cutting Board", "Kettle", "Stock Pot", "Toaster", "Spice Rack", "Mixing Bowl"],
                ["weeknight cooking", "baking", "meal prep", "entertaining guests", "small kitchens"]),
    "Sports": (["Yoga Mat", "Dumbbell", "Running Shoe", "Tennis Racket", "Cycling Helmet", "Jump Rope", "Water Bottle", "Resistance Band", "Football", "Swim Goggles"],
               ["home workouts", "training for a race", "team practice", "beginners", "recovery days"]),
    "Electronics": (["Headphones", "Phone Charger", "Bluetooth Speaker", "Smart Watch", "USB Cable", "Power Bank", "Webcam", "Keyboard", "Mouse", "Monitor Stand"],
                    ["remote work", "gaming", "commuting", "studying", "travel"]),
    "Books": (["Mystery Novel", "Cookbook", "Travel Guide", "Science Fiction Novel", "Biography", "Poetry Collection", "History Book", "Children's Book", "Self-Help Book", "Graphic Novel"],
              ["long flights", "book clubs", "bedtime reading", "gifts", "learning something new"]),
    "Toys": (["Building Blocks", "Puzzle", "Board Game", "Plush Toy", "Toy Car", "Doll", "Science Kit", "Art Set", "Kite", "Card Game"],
             ["family game night", "rainy days", "birthday gifts", "ages 3 and up", "classrooms"]),
    "Garden": (["Garden Hose", "Pruning Shears", "Plant Pot", "Seed Kit", "Watering Can", "Garden Gloves", "Bird Feeder", "Compost Bin", "Lawn Sprinkler", "Trowel"],
               ["balcony gardens", "vegetable beds", "spring planting", "indoor plants", "small yards"]),
    "Pets": (["Dog Leash", "Cat Tree", "Pet Bed", "Chew Toy", "Litter Box", "Pet Shampoo", "Food Bowl", "Aquarium Filter", "Bird Cage", "Pet Carrier"],
             ["puppies", "senior pets", "apartment living", "long walks", "travel with pets"]),
    "Office": (["Notebook", "Gel Pen", "Desk Lamp", "Stapler", "File Organizer", "Sticky Notes", "Desk Chair", "Whiteboard", "Paper Shredder", "Label Maker"],
               ["home offices", "students", "meetings", "planning", "small businesses"]),
    "Outdoors": (["Tent", "Sleeping Bag", "Hiking Backpack", "Camping Stove", "Headlamp", "Trekking Poles", "Cooler", "Hammock", "Rain Jacket", "Compass"],
                 ["weekend camping", "day hikes", "festivals", "backpacking trips", "emergency kits"]),
}
_ADJECTIVES = ["Classic", "Pro", "Compact", "Deluxe", "Eco", "Ultra", "Essential", "Premium", "Lightweight", "Heavy-Duty", "Everyday", "Smart"]
_FEATURES = ["durable build", "easy to clean", "recycled materials", "two-year warranty", "ergonomic design", "compact storage", "bright colours", "quiet operation", "gift box included", "fast setup"]
_SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "sel", "qua", "dri", "no", "bel", "zan", "fy", "ox", "lu", "mar"]
_ZONES = [dt.timezone(dt.timedelta(hours=h)) for h in (-8, -5, -3, 1, 2, 5, 8, 9)]
_EVENT_KEYS = ("event_id", "user_id", "item_id", "event_type", "event_ts", "rating", "value", "session_id", "source")
MALFORMED_KINDS: tuple[Reason, ...] = tuple(Reason)


@dataclass
class Catalog:
    category_names: list[tuple[str, str]]          # (department, product type)
    category_neighbours: list[list[int]]
    item_category: np.ndarray
    item_launch_day: np.ndarray
    item_price: np.ndarray
    item_popularity: np.ndarray
    item_text: list[tuple[str, str, str]]          # (title, brand, description)
    successors: list[list[int]]
    successor_cum: list[list[float]]
    category_items: list[list[int]] = field(default_factory=list)
    category_cum: list[list[float]] = field(default_factory=list)

    def sample_in_category(self, rng: random.Random, category: int) -> int:
        cum = self.category_cum[category]
        return self.category_items[category][bisect(cum, rng.random() * cum[-1])]


@dataclass
class Population:
    interests: np.ndarray        # (users, K) product types
    interest_cum: list[list[float]]  # per user, cumulative interest weights, last = 1
    activity_cum: list[float]
    is_bot: np.ndarray


@dataclass
class DayCounts:
    lines: int = 0
    valid_events: int = 0
    duplicates: int = 0
    near_duplicates: int = 0
    late: int = 0
    offset_ts: int = 0
    bot_events: int = 0
    sessions: int = 0
    malformed: dict[str, int] = field(default_factory=lambda: {k.value: 0 for k in MALFORMED_KINDS})
    by_type: dict[str, int] = field(default_factory=lambda: {"view": 0, "click": 0, "cart": 0, "purchase": 0, "rate": 0})


class Simulator:
    """Generates any day of the simulated world from the settings alone."""

    def __init__(self, cfg: SimulatorSettings):
        self.cfg = cfg
        self.catalog = _build_catalog(cfg)
        self.population = _build_population(cfg, self.catalog)
        self._state_day = 0
        self._interests = self.population.interests.copy()

    def day_index(self, ds: str) -> int:
        index = (dt.date.fromisoformat(ds) - self.cfg.start_date).days
        if index < 0:
            raise InputError(f"ds {ds} is before the simulator's start_date {self.cfg.start_date}")
        return index

    def quota(self, day: int) -> int:
        """Lines on ``day``: ``events`` spread evenly over ``days``, same rate after."""
        base, extra = divmod(self.cfg.events, self.cfg.days)
        return base + (1 if day % self.cfg.days < extra else 0)

    def interests_on(self, day: int) -> np.ndarray:
        """Users' interests after ``day`` days of drift (drift is a function of (seed, day))."""
        if day < self._state_day:
            self._interests, self._state_day = self.population.interests.copy(), 0
        neighbours = self.catalog.category_neighbours
        while self._state_day < day:
            rng = np.random.default_rng([self.cfg.seed, 1, self._state_day])
            users = np.flatnonzero(rng.random(len(self._interests)) < self.cfg.interest_drift)
            slots = rng.integers(0, self._interests.shape[1], len(users))
            picks = rng.random(len(users))
            for user, slot, pick in zip(users.tolist(), slots.tolist(), picks.tolist()):
                options = neighbours[self._interests[user, slot]]
                self._interests[user, slot] = options[int(pick * len(options))]
            self._state_day += 1
        return self._interests

    # ---- one day -------------------------------------------------------------
    def write_day(self, lake: Lake, ds: str) -> DayCounts:
        day = self.day_index(ds)
        with RawPartitionWriter(lake, Dataset.RAW_ITEMS, ds, source=SOURCE) as writer:
            writer.write_lines(self.catalog_lines(day))
        with RawPartitionWriter(lake, Dataset.RAW_EVENTS, ds, source=SOURCE) as writer:
            counts = self.events(day, writer.write_line)
            writer.extra["simulator"] = {k: v for k, v in counts.__dict__.items() if k != "lines"}
            writer.extra["simulator"]["bot_users"] = [_user_id(int(u)) for u in np.flatnonzero(self.population.is_bot)]
        return counts

    def catalog_lines(self, day: int) -> list[bytes]:
        """Day 0: the launch catalog; later days: newly launched items and price changes."""
        cat = self.catalog
        day_start = _day_start(self.cfg.start_date, day)
        rng = np.random.default_rng([self.cfg.seed, 2, day])
        if day == 0:
            changed = np.flatnonzero(cat.item_launch_day == 0)
            repriced = np.array([], dtype=int)
        else:
            changed = np.flatnonzero(cat.item_launch_day == day)
            live = np.flatnonzero(cat.item_launch_day < day)
            repriced = live[rng.random(len(live)) < 0.005]
        repriced_set = set(repriced.tolist())
        lines = []
        for item in sorted(set(changed.tolist()) | repriced_set):
            price = float(cat.item_price[item])
            if item in repriced_set:
                price = round(price * float(rng.choice([0.8, 0.9, 1.1, 1.25])), 2)
            title, brand, description = cat.item_text[item]
            dept, kind = cat.category_names[cat.item_category[item]]
            record = {"item_id": _item_id(item), "title": title, "brand": brand, "categories": [dept, kind],
                      "description": description, "price": price,
                      "updated_at": format_ts(day_start + dt.timedelta(seconds=int(rng.integers(0, 3600))))}
            lines.append(json.dumps(record, separators=(",", ":")).encode())
        return lines

    def events(self, day: int, emit) -> DayCounts:
        """Write ``quota(day)`` lines for ``day`` through ``emit(bytes)``; return what was written."""
        cfg, cat, pop = self.cfg, self.catalog, self.population
        noise = cfg.noise
        rng = random.Random(f"{cfg.seed}:events:{day}")
        rand = rng.random
        interests = self.interests_on(day).tolist()
        day_start = _day_start(cfg.start_date, day)
        day_epoch = int(day_start.timestamp())
        day_prefix = day_start.strftime("%Y-%m-%dT")
        launch = cat.item_launch_day.tolist()
        item_category = cat.item_category.tolist()
        price = cat.item_price.tolist()
        is_bot = pop.is_bot.tolist()
        activity_cum, activity_total = pop.activity_cum, pop.activity_cum[-1]
        counts = DayCounts()
        quota = self.quota(day)
        hours = list(accumulate([1, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 7, 8, 7, 6, 6, 6, 7, 9, 10, 10, 8, 5, 3]))
        n_users = len(activity_cum)
        seq_strength = cfg.sequential_strength
        next_event = 0

        def stamp(second: int) -> str:
            # second: offset from the start of this day (negative for late events)
            if 0 <= second < 86_400:
                h, rem = divmod(second, 3600)
                m, sec = divmod(rem, 60)
                return f"{day_prefix}{h:02d}:{m:02d}:{sec:02d}Z"
            return format_ts(dt.datetime.fromtimestamp(day_epoch + second, dt.timezone.utc))

        def write(user: int, item: int, kind: str, second: int, session: str, rating=None, value=None, bot=False) -> None:
            nonlocal next_event
            if second >= 86_400 or counts.lines >= quota:
                return
            next_event += 1
            event_id = _event_id(day, next_event)
            if bot:  # bot traffic is clean JSON; its only defect is being a bot
                emit(_line(event_id, _user_id(user), _item_id(item), kind, stamp(second), None, None, session))
                counts.lines += 1
                counts.valid_events += 1
                counts.by_type[kind] += 1
                counts.bot_events += 1
                return
            if rand() < noise.malformed_rate:
                defect = MALFORMED_KINDS[int(rand() * len(MALFORMED_KINDS))]
                record = _record(event_id, _user_id(user), _item_id(item), kind, stamp(second), rating, value, session)
                emit(_malformed(record, defect, rng, day_start))
                counts.malformed[defect.value] += 1
                counts.lines += 1
                return
            if rand() < noise.late_rate:
                ts = stamp(second - 86_400 * (1 + int(rand() * 3)))
                counts.late += 1
            elif rand() < noise.offset_ts_rate:
                zone = _ZONES[int(rand() * len(_ZONES))]
                ts = dt.datetime.fromtimestamp(day_epoch + second, zone).isoformat()
                counts.offset_ts += 1
            else:
                ts = stamp(second)
            user_id, item_id = _user_id(user), _item_id(item)
            encoded = _line(event_id, user_id, item_id, kind, ts, rating, value, session)
            emit(encoded)
            counts.lines += 1
            counts.valid_events += 1
            counts.by_type[kind] += 1
            if counts.lines < quota and rand() < noise.duplicate_rate:
                emit(encoded)
                counts.lines += 1
                counts.duplicates += 1
            if counts.lines < quota and kind == "view" and rand() < noise.near_duplicate_rate:
                again = second + 1 + int(rand() * 4)  # 1-4 s after the original view
                if again < 86_400:
                    next_event += 1
                    emit(_line(_event_id(day, next_event), user_id, item_id, kind, stamp(again), None, None, session))
                    counts.lines += 1
                    counts.near_duplicates += 1

        def live_item(candidate: int, category: int) -> int:
            for _ in range(3):
                if launch[candidate] <= day:
                    return candidate
                candidate = cat.sample_in_category(rng, category)
            return cat.category_items[category][0]  # the category's top item is always live

        while counts.lines < quota:
            user = min(bisect(activity_cum, rand() * activity_total), n_users - 1)
            counts.sessions += 1
            session = f"s{day:05d}-{counts.sessions:08d}"
            second = bisect(hours, rand() * hours[-1]) * 3600 + int(rand() * 3600)
            if is_bot[user]:
                for _ in range(rng.randint(*BOT_SESSION_VIEWS)):
                    item = int(rand() * len(launch))
                    if launch[item] <= day:
                        write(user, item, "view", second, session, bot=True)
                    second += 1 + int(rand() * 2)
                continue
            cum, mine = pop.interest_cum[user], interests[user]
            item = -1
            for _ in range(MAX_SESSION_VIEWS):
                previous = item
                if item >= 0 and rand() < seq_strength:
                    item = live_item(cat.successors[item][bisect(cat.successor_cum[item], rand())], item_category[item])
                else:
                    category = mine[bisect(cum, rand())]
                    item = live_item(cat.sample_in_category(rng, category), category)
                if item == previous:  # a user moves on; the same item twice in a row is a near-duplicate's job
                    item = live_item(cat.successors[item][0], item_category[item])
                if second >= 86_400 or counts.lines >= quota:
                    break
                write(user, item, "view", second, session)
                if rand() < 0.45:  # the funnel: click, cart, purchase, rate
                    t = second + 2 + int(rand() * 30)
                    write(user, item, "click", t, session)
                    if rand() < 0.3:
                        t += 5 + int(rand() * 60)
                        write(user, item, "cart", t, session)
                        if rand() < 0.5:
                            t += 10 + int(rand() * 120)
                            write(user, item, "purchase", t, session, value=price[item])
                            if rand() < 0.3:
                                t += 60 + int(rand() * 600)
                                write(user, item, "rate", t, session, rating=float(min(5, max(1, round(rng.gauss(4.0, 1.0))))))
                second += 6 + int(rng.expovariate(1 / 40))  # > 5 s: closer repeats are noise
                if rand() < 0.2:  # a session ends after each view with probability 0.2
                    break
        return counts


def simulate(settings: Settings, *, ds_from: str | dt.date | None = None, ds_to: str | dt.date | None = None) -> dict:
    """Write raw events and catalog for each day in [ds_from, ds_to] (default: the configured days)."""
    cfg = settings.simulator
    first = ds_str(ds_from) if ds_from else cfg.start_date.isoformat()
    last = ds_str(ds_to) if ds_to else (cfg.start_date + dt.timedelta(days=cfg.days - 1)).isoformat()
    if last < first:
        raise InputError(f"ds_to {last} is before ds_from {first}")
    simulator = Simulator(cfg)
    lake = Lake.from_settings(settings)
    summary = {"source": SOURCE, "days": [], "lines": 0, "valid_events": 0, "malformed": 0}
    day = dt.date.fromisoformat(first)
    while day.isoformat() <= last:
        counts = simulator.write_day(lake, day.isoformat())
        summary["days"].append(day.isoformat())
        summary["lines"] += counts.lines
        summary["valid_events"] += counts.valid_events
        summary["malformed"] += sum(counts.malformed.values())
        day += dt.timedelta(days=1)
    return summary


# ---- the world ----------------------------------------------------------------
def _build_catalog(cfg: SimulatorSettings) -> Catalog:
    rng = np.random.default_rng([cfg.seed, 0])
    kinds = [(dept, kind) for dept, (kinds, _) in _DEPARTMENTS.items() for kind in kinds]
    order = rng.permutation(len(kinds))
    names = []
    for c in range(cfg.categories):
        dept, kind = kinds[order[c % len(kinds)]]
        names.append((dept, kind if c < len(kinds) else f"{kind} {c // len(kinds) + 1}"))
    by_dept: dict[str, list[int]] = {}
    for c, (dept, _) in enumerate(names):
        by_dept.setdefault(dept, []).append(c)
    neighbours = []
    for c, (dept, _) in enumerate(names):
        same = [n for n in by_dept[dept] if n != c]
        near = sorted(set(same[:4]) | {(c + 1) % cfg.categories, (c - 1) % cfg.categories} - {c})
        neighbours.append(near or [c])

    n = cfg.items
    category_weight = rng.dirichlet(np.full(cfg.categories, 2.0))
    item_category = rng.choice(cfg.categories, size=n, p=category_weight)
    rank = rng.permutation(n) + 1
    popularity = 1.0 / rank.astype(float) ** cfg.zipf_exponent
    launch = np.where(rng.random(n) < cfg.new_item_rate, rng.integers(1, max(cfg.days, 2), n), 0)
    base_price = np.exp(rng.normal(3.0, 0.6, cfg.categories))
    price = np.round(base_price[item_category] * np.exp(rng.normal(0, 0.35, n)), 2)
    texts = _item_texts(rng, cfg, names, item_category)

    category_items: list[list[int]] = [[] for _ in range(cfg.categories)]
    for i in np.argsort(-popularity, kind="stable").tolist():
        category_items[item_category[i]].append(i)
    for c in range(cfg.categories):  # the top item of each category is live from day 0
        if category_items[c]:
            launch[category_items[c][0]] = 0
    category_cum = [list(accumulate(popularity[items].tolist())) if items else [1.0] for items in category_items]
    for c, items in enumerate(category_items):
        if not items:  # an empty category borrows a neighbour's items
            donor = next(d for d in range(cfg.categories) if category_items[d])
            category_items[c], category_cum[c] = category_items[donor], category_cum[donor]

    # Successors: SUCCESSORS - 1 popular items of the item's own type and one of a neighbouring type.
    succ = np.empty((n, SUCCESSORS), dtype=np.int64)
    neighbour_pick = rng.random(n)
    draws = rng.random((n, SUCCESSORS))
    source_category = np.repeat(item_category[:, None], SUCCESSORS, axis=1)
    source_category[:, -1] = [neighbours[c][int(u * len(neighbours[c]))] for c, u in zip(item_category.tolist(), neighbour_pick.tolist())]
    for c in range(cfg.categories):
        rows, cols = np.nonzero(source_category == c)
        if not len(rows):
            continue
        items = np.asarray(category_items[c])
        cum = np.asarray(category_cum[c])
        at = np.minimum(np.searchsorted(cum, draws[rows, cols] * cum[-1], side="right"), len(items) - 1)
        own = items[at] == rows  # never one's own successor
        at[own] = (at[own] + 1) % len(items)
        succ[rows, cols] = items[at]
    weights = rng.dirichlet(np.full(SUCCESSORS, 1.0), size=n).cumsum(axis=1)
    weights[:, -1] = 1.0
    return Catalog(names, neighbours, item_category, launch, price, popularity, texts, succ.tolist(), weights.tolist(),
                   category_items, category_cum)


def _item_texts(rng: np.random.Generator, cfg: SimulatorSettings, names: list[tuple[str, str]], item_category: np.ndarray) -> list[tuple[str, str, str]]:
    n = len(item_category)
    brands = ["".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4)))).capitalize() for _ in range(cfg.brands)]
    brand_of = rng.integers(0, cfg.brands, n).tolist()
    adjective = rng.integers(0, len(_ADJECTIVES), n).tolist()
    use = rng.random(n).tolist()
    feature = rng.integers(0, len(_FEATURES), (n, 2)).tolist()
    model = rng.integers(100, 999, n).tolist()
    texts = []
    for i, c in enumerate(item_category.tolist()):
        dept, kind = names[c]
        uses = _DEPARTMENTS[dept][1]
        brand, adj = brands[brand_of[i]], _ADJECTIVES[adjective[i]]
        f1, f2 = _FEATURES[feature[i][0]], _FEATURES[(feature[i][0] + 1 + feature[i][1] % (len(_FEATURES) - 1)) % len(_FEATURES)]
        texts.append((f"{brand} {adj} {kind} {model[i]}", brand,
                      f"{adj} {kind.lower()} from {brand}, made for {uses[int(use[i] * len(uses))]}. Features: {f1}, {f2}."))
    return texts


def _build_population(cfg: SimulatorSettings, catalog: Catalog) -> Population:
    rng = np.random.default_rng([cfg.seed, 3])
    k = min(3, cfg.categories)
    category_pop = np.bincount(catalog.item_category, weights=catalog.item_popularity, minlength=cfg.categories)
    log_p = np.log((category_pop + 1e-9) / (category_pop + 1e-9).sum())
    # k distinct interests per user, drawn by category popularity (Gumbel top-k), in chunks to bound memory.
    interests = np.empty((cfg.users, k), dtype=np.int64)
    for lo in range(0, cfg.users, 65_536):
        hi = min(lo + 65_536, cfg.users)
        keys = log_p + rng.gumbel(size=(hi - lo, cfg.categories))
        interests[lo:hi] = np.argsort(-keys, axis=1)[:, :k]
    interest_cum = np.cumsum(rng.dirichlet(np.full(k, 1.0), size=cfg.users), axis=1)
    interest_cum[:, -1] = 1.0
    activity = rng.lognormal(0.0, 1.0, cfg.users)
    is_bot = rng.random(cfg.users) < cfg.noise.bot_user_rate
    return Population(interests, interest_cum.tolist(), list(accumulate(activity.tolist())), is_bot)


# ---- lines ----------------------------------------------------------------------
def _malformed(record: dict, kind: Reason, rng: random.Random, day_start: dt.datetime) -> bytes:
    """A line with exactly one defect, of the given kind."""
    if kind is Reason.EMPTY_LINE:
        return rng.choice([b"", b"   ", b"\t"])
    if kind is Reason.INVALID_UTF8:
        return json.dumps(record, separators=(",", ":")).encode().replace(b'"user_id":"', b'"user_id":"\xff\xfe', 1)
    if kind is Reason.BROKEN_JSON:
        text = json.dumps(record, separators=(",", ":")).encode()
        return text[: 1 + int(rng.random() * (len(text) - 2))]
    if kind is Reason.NOT_AN_OBJECT:
        return rng.choice([json.dumps(list(record.values())).encode(), b'"just a string"', b"42", b"null"])
    if kind is Reason.MISSING_FIELD:
        del record[rng.choice(["event_id", "user_id", "item_id", "event_type", "event_ts", "source"])]
    elif kind is Reason.WRONG_TYPE:
        column = rng.choice(["user_id", "item_id", "event_ts", "rating"])
        record[column] = {"user_id": 12345, "item_id": [record["item_id"]], "event_ts": 1_700_000_000, "rating": "five"}[column]
    elif kind is Reason.UNKNOWN_EVENT_TYPE:
        record["event_type"] = rng.choice(["hover", "share", "wishlist", "VIEW"])
    elif kind is Reason.BAD_TIMESTAMP:
        record["event_ts"] = rng.choice([day_start.strftime("%Y/%m/%d %H:%M"), day_start.strftime("%Y-%m-%dT%H:%M:%S"), "yesterday"])
    elif kind is Reason.TS_IN_FUTURE:
        record["event_ts"] = format_ts(day_start + dt.timedelta(days=30 + int(rng.random() * 400)))
    elif kind is Reason.TS_BEFORE_MIN:
        record["event_ts"] = format_ts(dt.datetime(1970 + int(rng.random() * 19), 1 + int(rng.random() * 12), 1, tzinfo=dt.timezone.utc))
    elif kind is Reason.OUT_OF_RANGE:
        record["rating"] = rng.choice([-1.0, 7.0, 11.0])
    elif kind is Reason.UNKNOWN_ITEM:
        record["item_id"] = f"x{int(rng.random() * 10**9):09d}"
    return json.dumps(record, separators=(",", ":")).encode()


def _record(event_id, user_id, item_id, kind, ts, rating, value, session) -> dict:
    return dict(zip(_EVENT_KEYS, (event_id, user_id, item_id, kind, ts, rating, value, session, SOURCE)))


def _line(event_id: str, user_id: str, item_id: str, kind: str, ts: str, rating, value, session: str) -> bytes:
    """One valid event line; the same bytes as compact ``json.dumps``, several times faster (ids are plain ASCII)."""
    return (f'{{"event_id":"{event_id}","user_id":"{user_id}","item_id":"{item_id}","event_type":"{kind}",'
            f'"event_ts":"{ts}","rating":{"null" if rating is None else repr(rating)},'
            f'"value":{"null" if value is None else repr(value)},"session_id":"{session}","source":"{SOURCE}"}}').encode()


def _day_start(start: dt.date, day: int) -> dt.datetime:
    return dt.datetime.combine(start + dt.timedelta(days=day), dt.time(), dt.timezone.utc)


def _user_id(user: int) -> str:
    return f"u{user:07d}"


def _item_id(item: int) -> str:
    return f"i{item:07d}"


def _event_id(day: int, number: int) -> str:
    return f"e{day:05d}-{number:09d}"
