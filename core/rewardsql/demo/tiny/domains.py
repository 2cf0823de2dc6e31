"""The bundled example's databases: a few small, realistic schemas with foreign keys.

Each domain is described once (tables, columns and the words a question uses for them); rows are
drawn from a seeded ``random.Random``, so the same seed always gives the same database contents.
Schemas are deliberately compact: the tiny model reads the whole ``CREATE TABLE`` text in every
prompt, and prompt length is what CPU training time is made of.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Column:
    """One column. ``role`` says how questions may use it.

    Roles: ``id`` (primary key), ``label`` (unique name of a row), ``category`` (a few repeated
    text values), ``number`` (an integer measure between ``low`` and ``high``), ``fk`` (references
    ``ref``'s id).
    """

    name: str
    role: str
    words: str = ""
    values: tuple[str, ...] = ()
    low: int = 0
    high: int = 0
    ref: str = ""
    additive: bool = True  # whether "total <words>" makes sense (a quantity, not a year)

    @property
    def sql_type(self) -> str:
        return "TEXT" if self.role in ("label", "category") else "INTEGER"


@dataclass(frozen=True)
class Table:
    """A table, its plural noun for questions and how many rows it gets."""

    name: str
    noun: str
    singular: str
    rows: int
    columns: tuple[Column, ...]

    def column(self, role: str) -> Column | None:
        return next((c for c in self.columns if c.role == role), None)

    def columns_with(self, role: str) -> list[Column]:
        return [c for c in self.columns if c.role == role]


@dataclass(frozen=True)
class Domain:
    """One database: its tables in creation order (parents before children)."""

    db_id: str
    tables: tuple[Table, ...]

    def table(self, name: str) -> Table:
        return next(t for t in self.tables if t.name == name)


_CITIES = ("Lyon", "Oslo", "Porto", "Quito", "Dakar", "Perth", "Turin", "Seville", "Osaka",
           "Denver", "Austin", "Lagos", "Hanoi", "Bergen", "Krakow", "Malaga", "Leeds", "Graz",
           "Ghent", "Nantes", "Bremen", "Tampere", "Bilbao", "Genoa", "Cork", "Dublin", "Kyoto",
           "Busan", "Pune", "Cusco", "Rosario", "Recife", "Tucson", "Boise", "Halifax", "Regina",
           "Nairobi", "Accra", "Tunis", "Hobart")
_COUNTRIES = ("France", "Norway", "Chile", "Kenya", "Japan", "Canada", "Brazil", "Poland", "Egypt",
              "Peru", "India", "Spain", "Italy", "Greece", "Mexico", "Ghana", "Nepal", "Ireland",
              "Austria", "Finland", "Vietnam", "Morocco", "Uruguay", "Iceland")
_FIRST = ("Ada", "Ben", "Cara", "Dan", "Eva", "Finn", "Gia", "Hugo", "Ivy", "Jon", "Kim", "Leo",
          "Mia", "Nils", "Omar", "Pia", "Raj", "Sara", "Tom", "Uma", "Vera", "Wes", "Yara", "Zoe")
_LAST = ("Abbott", "Baker", "Chen", "Diaz", "Evans", "Fox", "Garcia", "Hill", "Ito", "Jones",
         "Khan", "Lopez", "Moss", "Novak", "Ortiz", "Park", "Quinn", "Reed", "Silva", "Tran")
_ADJ = ("Red", "Blue", "Silent", "Golden", "Hidden", "Little", "Wild", "Bright", "Dark", "Green",
        "Lost", "Swift", "Quiet", "Broken", "Brave", "Iron")
_NOUN = ("River", "Lamp", "Garden", "Tower", "Forest", "Stone", "Bridge", "Harbor", "Window",
         "Mountain", "Letter", "Mirror", "Road", "Island", "Winter", "Clock")

DOMAINS: tuple[Domain, ...] = (
    Domain("shop", (
        Table("customers", "customers", "customer", 120, (
            Column("id", "id"),
            Column("name", "label", "person"),
            Column("city", "category", "city", _CITIES[:24]),
            Column("age", "number", "age", low=18, high=80, additive=False),
        )),
        Table("products", "products", "product", 60, (
            Column("id", "id"),
            Column("name", "label", "thing"),
            Column("category", "category", "category",
                   ("Garden", "Kitchen", "Toys", "Books", "Sports", "Office", "Music", "Games",
                    "Tools", "Beauty", "Health", "Baby")),
            Column("price", "number", "price", low=5, high=900),
        )),
        Table("orders", "orders", "order", 420, (
            Column("id", "id"),
            Column("customer_id", "fk", ref="customers"),
            Column("product_id", "fk", ref="products"),
            Column("quantity", "number", "quantity", low=1, high=20),
            Column("year", "number", "year", low=2015, high=2024, additive=False),
        )),
    )),
    Domain("school", (
        Table("students", "students", "student", 150, (
            Column("id", "id"),
            Column("name", "label", "person"),
            Column("major", "category", "major",
                   ("Physics", "History", "Biology", "Law", "Economics", "Art", "Chemistry",
                    "Medicine", "Music", "Geology", "Philosophy", "Statistics")),
            Column("age", "number", "age", low=17, high=40, additive=False),
        )),
        Table("courses", "courses", "course", 40, (
            Column("id", "id"),
            Column("title", "label", "thing"),
            Column("department", "category", "department",
                   ("Science", "Humanities", "Business", "Arts", "Engineering", "Languages",
                    "Mathematics", "Education")),
            Column("credits", "number", "credits", low=1, high=10),
        )),
        Table("enrollments", "enrollments", "enrollment", 450, (
            Column("id", "id"),
            Column("student_id", "fk", ref="students"),
            Column("course_id", "fk", ref="courses"),
            Column("grade", "number", "grade", low=30, high=100, additive=False),
        )),
    )),
    Domain("library", (
        Table("authors", "authors", "author", 70, (
            Column("id", "id"),
            Column("name", "label", "person"),
            Column("country", "category", "country", _COUNTRIES),
            Column("born", "number", "birth year", low=1900, high=1995, additive=False),
        )),
        Table("books", "books", "book", 200, (
            Column("id", "id"),
            Column("title", "label", "thing"),
            Column("author_id", "fk", ref="authors"),
            Column("genre", "category", "genre",
                   ("Mystery", "Fantasy", "Poetry", "Romance", "Travel", "Science", "Horror",
                    "History", "Drama", "Biography", "Humor", "Cooking")),
            Column("pages", "number", "page count", low=60, high=900),
        )),
        Table("loans", "loans", "loan", 400, (
            Column("id", "id"),
            Column("book_id", "fk", ref="books"),
            Column("branch", "category", "branch",
                   ("North", "South", "East", "West", "Central", "Harbor", "Airport", "Campus")),
            Column("days", "number", "loan days", low=1, high=60),
        )),
    )),
    Domain("clinic", (
        Table("doctors", "doctors", "doctor", 50, (
            Column("id", "id"),
            Column("name", "label", "person"),
            Column("specialty", "category", "specialty",
                   ("Cardiology", "Surgery", "Pediatrics", "Neurology", "Oncology",
                    "Dermatology", "Radiology", "Psychiatry", "Urology", "Orthopedics")),
            Column("salary", "number", "salary", low=3000, high=15000),
        )),
        Table("patients", "patients", "patient", 160, (
            Column("id", "id"),
            Column("name", "label", "person"),
            Column("city", "category", "city", _CITIES[16:]),
            Column("age", "number", "age", low=1, high=95, additive=False),
        )),
        Table("visits", "visits", "visit", 480, (
            Column("id", "id"),
            Column("doctor_id", "fk", ref="doctors"),
            Column("patient_id", "fk", ref="patients"),
            Column("cost", "number", "cost", low=20, high=2000),
            Column("year", "number", "year", low=2016, high=2024, additive=False),
        )),
    )),
)


def _labels(rng: random.Random, kind: str, count: int) -> list[str]:
    """``count`` distinct names: people ("Ada Chen") or things ("Silent River")."""
    first, second = (_FIRST, _LAST) if kind == "person" else (_ADJ, _NOUN)
    pool = [f"{a} {b}" for a in first for b in second]
    if count > len(pool):
        raise ValueError(f"cannot make {count} distinct {kind} names")
    return rng.sample(pool, count)


def generate_rows(domain: Domain, seed: int) -> dict[str, list[tuple]]:
    """Every table's rows, drawn from a generator seeded by ``seed`` and the domain's name."""
    rng = random.Random(f"{seed}:{domain.db_id}")
    rows: dict[str, list[tuple]] = {}
    for table in domain.tables:
        columns = {}
        for col in table.columns:
            if col.role == "id":
                columns[col.name] = list(range(1, table.rows + 1))
            elif col.role == "label":
                columns[col.name] = _labels(rng, col.words, table.rows)
            elif col.role == "category":
                # Skewed weights, so counts per value differ and GROUP BY answers are interesting
                weights = [rng.uniform(0.3, 1.0) for _ in col.values]
                columns[col.name] = rng.choices(col.values, weights, k=table.rows)
            elif col.role == "number":
                columns[col.name] = [rng.randint(col.low, col.high) for _ in range(table.rows)]
            elif col.role == "fk":
                parents = domain.table(col.ref).rows
                # Some parents get many children and a few none: realistic and gives HAVING bite
                weights = [rng.paretovariate(1.5) for _ in range(parents)]
                columns[col.name] = rng.choices(range(1, parents + 1), weights, k=table.rows)
            else:  # pragma: no cover - a programming error in DOMAINS
                raise ValueError(f"unknown column role {col.role!r}")
        names = [c.name for c in table.columns]
        rows[table.name] = list(zip(*(columns[n] for n in names), strict=True))
    return rows


def create_table_sql(domain: Domain, table: Table) -> str:
    """Compact DDL; ``schema_ddl`` shows this text verbatim in every prompt."""
    parts = []
    for col in table.columns:
        if col.role == "id":
            parts.append(f"{col.name} INTEGER PRIMARY KEY")
        elif col.role == "fk":
            parts.append(f"{col.name} INTEGER REFERENCES {col.ref}(id)")
        else:
            parts.append(f"{col.name} {col.sql_type}")
    return f"CREATE TABLE {table.name} ({', '.join(parts)})"


def write_database(domain: Domain, rows: dict[str, list[tuple]], path: Path) -> None:
    """Create the SQLite file at ``path`` (which must not exist yet)."""
    conn = sqlite3.connect(path)
    try:
        for table in domain.tables:
            conn.execute(create_table_sql(domain, table))
            marks = ", ".join("?" for _ in table.columns)
            conn.executemany(f"INSERT INTO {table.name} VALUES ({marks})", rows[table.name])
        conn.commit()
    finally:
        conn.close()
