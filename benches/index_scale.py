#!/usr/bin/env python3
"""Driver of benches/index_scale.sh: an index at national size, and its hot queries timed.

  generate  --sqlite PATH | --postgres URL  [--studies 100000 --instances 2000000 --seed 1]
            [--xds-template FILE]
      Insert generated patients, studies, series and instances straight into an index that
      `beeldbrug` created (and migrated) before: the same tables and columns the gateway writes
      (src/store/index/migrations), names normalised as `normalize_name` does. With
      --xds-template (rows of one real publication, from `template`), every study also gets a
      DocumentEntry, SubmissionSet and HasMember association cloned from it, and a
      publication row, so that the publisher finds nothing to do. Writes the keys it used
      (patient IDs, names, dates) next to the database as KEYS.json for `queries`.
  template  --sqlite PATH | --postgres URL  OUT
      Save the XDS rows of the one study a running gateway published (the template).
  queries   BASE KEYS.json [--n 300 --warmup 30 --seed 1 --soap]
      Time QIDO-RS study searches (patient ID; name with wildcard; fuzzy name; date range;
      modality; modality + date) and, with --soap, ITI-18 FindDocuments over SOAP; p50/p99
      per kind as a Markdown table.
  explain   --sqlite PATH | --postgres URL  KEYS.json
      EXPLAIN (PostgreSQL: ANALYZE, BUFFERS) / EXPLAIN QUERY PLAN of the hot queries, with the
      SQL text the gateway sends (src/store/index/sql/query.rs, registry.rs, instances.rs).

Python 3 standard library plus `requests`; PostgreSQL through `psql` (COPY FROM STDIN).
"""

import argparse
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
import unicodedata
import uuid

# --- names --------------------------------------------------------------------------------

SURNAMES = [
    "de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker", "Janssen", "Visser",
    "Smit", "Meijer", "de Boer", "Mulder", "de Groot", "Bos", "Vos", "Peters", "Hendriks",
    "van Leeuwen", "Dekker", "Brouwer", "de Wit", "Dijkstra", "Smits", "de Graaf",
    "van der Meer", "van der Linden", "Kok", "Jacobs", "de Haan", "Vermeulen", "van den Heuvel",
    "van der Veen", "van den Broek", "de Bruijn", "de Bruin", "van der Heijden", "Schouten",
    "van Beek", "Willems", "van Vliet", "van de Ven", "Hoekstra", "Maas", "Verhoeven", "Koster",
    "van Dam", "van der Wal", "Prins", "Blom", "Huisman", "Peeters", "de Jonge", "Kuipers",
    "van Veen", "Post", "Kuiper", "Veenstra", "Kramer", "van den Brink", "Scholten",
    "van Wijk", "Postma", "Martens", "Vink", "de Ruiter", "Timmermans", "Groen", "Gerritsen",
    "Jonker", "van Loon", "Boer", "van der Velde", "Willemsen", "Smeets", "de Lange",
    "de Vos", "Bosch", "van Dongen", "Schipper", "de Koning", "van der Laan", "Koning",
    "van der Velden", "Driessen", "van Doorn", "Hermans", "Evers", "van den Bosch",
    "van der Meulen", "Hofman", "Bosman", "Wolters", "Sanders", "van der Horst", "Mol",
    "Kuijpers", "Molenaar", "van de Pol", "de Leeuw", "Verbeek", "Müller", "Öztürk", "Yılmaz",
    "Çelik", "Şahin", "Doğan", "Kaya", "Demir", "El Amrani", "Bouzid", "Nguyễn", "Zoë",
    "Ërtz", "Brandsma", "Hoogendoorn", "Lammers",
]
GIVEN = [
    "Jan", "Johannes", "Cornelis", "Hendrik", "Willem", "Pieter", "Gerrit", "Jacobus", "Dirk",
    "Maria", "Anna", "Johanna", "Cornelia", "Wilhelmina", "Elisabeth", "Hendrika", "Geertruida",
    "Daan", "Sem", "Lucas", "Levi", "Finn", "Noah", "Emma", "Julia", "Tess", "Sophie", "Zoë",
    "Mila", "Sara", "Eva", "Lotte", "Anouk", "Femke", "Sanne", "Bram", "Thijs", "Ruben", "Lars",
    "Mohammed", "Fatima", "Ayşe", "Mehmet", "Zeynep", "Ahmet", "Noor", "Yasmina", "Ilse",
    "Kees", "Henk", "Ria", "Joke", "Truus", "Marloes", "Ingrid", "Esther", "Marieke", "Renée",
    "Chloé", "Loïs", "Inès", "Joël", "Noël", "Daniël", "Michiel", "Sjoerd", "Wouter", "Jeroen",
]
SYLLABLES = [
    "ber", "dijk", "hout", "man", "sma", "stra", "kamp", "veld", "hof", "broek", "horst", "huis",
    "ing", "ga", "ter", "van", "bos", "lin", "wer", "ker", "gel", "ma", "ra", "to", "hui",
    "zen", "rink", "loo", "mei", "jer", "boom", "wijk", "ham", "sel", "dal", "bur", "ke", "ens",
]
PHYSICIANS = 300

# Study types: (weight, [(modality, series count range, instances per series range, SOP class)]).
SOP = {
    "CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
    "US": "1.2.840.10008.5.1.4.1.1.6.1", "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1", "MG": "1.2.840.10008.5.1.4.1.1.1.2",
    "PT": "1.2.840.10008.5.1.4.1.1.128", "NM": "1.2.840.10008.5.1.4.1.1.20",
    "XA": "1.2.840.10008.5.1.4.1.1.12.1", "SR": "1.2.840.10008.5.1.4.1.1.88.22",
}
STUDY_TYPES = [
    (20, "CT thorax", [("CT", (1, 3), (20, 140))]),
    (12, "MR hersenen", [("MR", (2, 5), (10, 40))]),
    (15, "Echo abdomen", [("US", (1, 1), (3, 15))]),
    (8, "Mammografie", [("MG", (1, 1), (4, 4))]),
    (18, "X-thorax", [("DX", (1, 2), (1, 1))]),
    (12, "X-skelet", [("CR", (1, 3), (1, 2))]),
    (2, "PET-CT", [("PT", (1, 1), (60, 120)), ("CT", (1, 1), (60, 120))]),
    (2, "Skeletscintigrafie", [("NM", (1, 2), (1, 3))]),
    (3, "Coronairangiografie", [("XA", (2, 6), (5, 30))]),
    (8, "Verslag", [("SR", (1, 1), (1, 1))]),
]


def normalize_name(s):
    """As src/model/query.rs `normalize_name` for the letters used here: lowercase, accents off."""
    out = []
    for c in s.lower():
        special = {"ß": "ss", "æ": "ae", "ø": "o", "ł": "l", "đ": "d", "ı": "i", "œ": "oe",
                   "þ": "th", "ĳ": "ij", "ð": "d", "ħ": "h", "ŧ": "t", "ŋ": "n", "ĸ": "k"}
        if c in special:
            out.append(special[c])
            continue
        d = unicodedata.normalize("NFD", c)
        out.append("".join(ch for ch in d if not unicodedata.combining(ch)))
    return "".join(out)


def name_words(norm):
    """As `name_words` in src/store/index/sql/schema.rs: the suffixes of a normalised name that
    start at its beginning or after '^', ' ' or '='."""
    words, start = [], True
    for i, c in enumerate(norm):
        if start and norm[i:] not in words:
            words.append(norm[i:])
        start = c in "^ ="
    return words


def bsns(rng, n):
    """n distinct 9-digit numbers that pass the BSN eleven test."""
    seen, out = set(), []
    while len(out) < n:
        prefix = rng.randrange(10_000_000, 99_999_999)
        digits = [int(c) for c in str(prefix)]
        s = sum(w * d for w, d in zip(range(9, 1, -1), digits))
        last = s % 11
        if last == 10:
            continue
        bsn = f"{prefix}{last}"
        if bsn not in seen:
            seen.add(bsn)
            out.append(bsn)
    return out


def surname(rng, tail):
    # About 60 % from the common names (Zipf-like), 40 % from a long generated tail.
    if rng.random() < 0.6:
        i = min(int(rng.paretovariate(1.1)) - 1, len(SURNAMES) - 1)
        return SURNAMES[i] if rng.random() < 0.7 else rng.choice(SURNAMES)
    return rng.choice(tail)


def random_date(rng, start=(2016, 1, 1), days=3987):
    t = time.mktime(time.struct_time((*start, 12, 0, 0, 0, 0, -1))) + rng.randrange(days) * 86400
    return time.strftime("%Y%m%d", time.localtime(t))


# --- generate -----------------------------------------------------------------------------

class Target:
    """Where rows go: a SQLite file (executemany) or PostgreSQL (psql COPY)."""

    def __init__(self, args):
        self.sqlite = args.sqlite
        self.postgres = args.postgres
        if self.sqlite:
            self.db = sqlite3.connect(self.sqlite)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=OFF")
            self.db.execute("PRAGMA cache_size=-262144")

    def scalar(self, sql):
        if self.sqlite:
            return self.db.execute(sql).fetchone()[0]
        out = subprocess.run(["psql", "-X", "-qAt", self.postgres, "-c", sql], check=True,
                             capture_output=True, text=True).stdout.strip()
        return out

    def has_table(self, table):
        if self.sqlite:
            return self.db.execute("SELECT count(*) FROM sqlite_master WHERE name = ?",
                                   (table,)).fetchone()[0] > 0
        return self.scalar(f"SELECT to_regclass('{table}') IS NOT NULL") == "t"

    def has_column(self, table, column):
        if self.sqlite:
            return self.db.execute("SELECT count(*) FROM pragma_table_info(?) WHERE name = ?",
                                   (table, column)).fetchone()[0] > 0
        return self.scalar("SELECT count(*) FROM information_schema.columns WHERE "
                           f"table_name = '{table}' AND column_name = '{column}'") == "1"

    def insert(self, table, columns, rows):
        rows = list(rows)
        if not rows:
            return
        if self.sqlite:
            marks = ", ".join("?" for _ in columns)
            self.db.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
            return
        def esc(v):
            if v is None:
                return "\\N"
            return str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
        data = "".join("\t".join(esc(v) for v in r) + "\n" for r in rows)
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", self.postgres, "-c",
                        f"COPY {table} ({', '.join(columns)}) FROM STDIN"],
                       input=data.encode(), check=True)

    def commit(self):
        if self.sqlite:
            self.db.commit()

    def finish(self):
        if self.sqlite:
            self.db.commit()
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.db.close()
        else:
            for t in ["patient", "study", "series", "instance", "xds_object", "xds_association",
                      "xds_publication"]:
                # Identity columns were given explicit ids: move their sequences past them.
                if t != "xds_publication":
                    self.scalar(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), "
                                f"(SELECT COALESCE(MAX(id), 1) FROM {t}))")
            subprocess.run(["psql", "-X", "-q", self.postgres, "-c", "VACUUM ANALYZE"], check=True)


def cmd_generate(args):
    rng = random.Random(args.seed)
    target = Target(args)
    base = {t: int(target.scalar(f"SELECT COALESCE(MAX(id), 0) FROM {t}"))
            for t in ["patient", "study", "series", "instance", "xds_object", "xds_association"]}
    n_patients = args.studies // 2
    tail = sorted({"".join(rng.choice(SYLLABLES) for _ in range(rng.randrange(2, 4))).capitalize()
                   for _ in range(8000)})
    physicians = [f"{surname(rng, tail)}^{rng.choice(GIVEN)[0]}" for _ in range(PHYSICIANS)]
    ids = bsns(rng, n_patients)
    patients = []
    for i, bsn in enumerate(ids):
        name = f"{surname(rng, tail)}^{rng.choice(GIVEN)}"
        patients.append((base["patient"] + i + 1, bsn, "", name, normalize_name(name),
                         random_date(rng, (1930, 1, 1), 33000), rng.choice("MF")))
    t0 = time.time()
    target.insert("patient", ["id", "patient_id", "issuer_of_patient_id", "patient_name",
                              "patient_name_norm", "patient_birth_date", "patient_sex"], patients)
    # Their words for fuzzy search (migration 0010), as the gateway writes them; an index of
    # a gateway from before that migration has no such table (BB_BIN of an older build).
    if target.has_table("patient_name_word"):
        target.insert("patient_name_word", ["word", "patient_pk"],
                      [(w, p[0]) for p in patients for w in name_words(p[4])])
    target.commit()
    log(f"{len(patients)} patients in {time.time() - t0:.1f} s")

    # Plan the studies first, then scale the instance counts to the target total.
    weights = [w for w, _, _ in STUDY_TYPES]
    plans = []
    for s in range(args.studies):
        patient = patients[s % n_patients] if s < n_patients else rng.choice(patients)
        _, desc, parts = rng.choices(STUDY_TYPES, weights)[0]
        series = []
        for modality, (smin, smax), (imin, imax) in parts:
            for _ in range(rng.randint(smin, smax)):
                series.append((modality, rng.randint(imin, imax)))
        plans.append((patient, desc, series))
    total = sum(n for _, _, ss in plans for _, n in ss)
    scale = args.instances / total
    uid_root = "1.2.826.0.1.3680043.10.543"
    now = int(time.time())
    studies, series_rows, keys_dates = [], [], []
    instance_batch = []
    n_series = n_instances = 0
    sop_cols = ["id", "sop_instance_uid", "series_pk", "sop_class_uid", "instance_number",
                "instance_number_int", "rows", "columns", "number_of_frames",
                "transfer_syntax_uid", "blob_key", "size_bytes", "stored_at", "bits_allocated"]
    stored_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 86400))
    # The study's computed values on its row (migration 0013), as the gateway keeps them;
    # an index of a gateway from before that migration has no such columns.
    study_values = target.has_column("study", "num_series")
    study_cols = ["id", "study_instance_uid", "patient_pk", "study_date", "study_time",
                  "accession_number", "study_id", "study_description",
                  "referring_physician_name", "referring_physician_name_norm", "last_arrival",
                  "arrivals"]
    if study_values:
        study_cols += ["num_series", "num_instances", "modalities", "sop_classes"]
    t0 = time.time()
    for s, (patient, desc, series) in enumerate(plans):
        study_pk = base["study"] + s + 1
        study_uid = f"{uid_root}.{rng.randrange(10**9, 10**10)}.{s + 1}"
        date = random_date(rng)
        counts = [max(1, round(n * scale)) for _, n in series]
        physician = rng.choice(physicians)
        studies.append((study_pk, study_uid, patient[0], date,
                        f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}",
                        f"A{rng.randrange(10**7, 10**8)}", str(s % 10000), desc, physician,
                        normalize_name(physician), now - 86400 * 30, sum(counts))
                       + ((len(series), sum(counts),
                           "\\".join(sorted({m for m, _ in series})),
                           "\\".join(sorted({SOP[m] for m, _ in series})))
                          if study_values else ()))
        for j, ((modality, _), count) in enumerate(zip(series, counts)):
            n_series += 1
            series_pk = base["series"] + n_series
            series_uid = f"{study_uid}.{j + 1}"
            series_rows.append((series_pk, series_uid, study_pk, modality, str(j + 1),
                                f"{desc} {j + 1}", "", date))
            for k in range(count):
                n_instances += 1
                sop = f"{series_uid}.{k + 1}"
                instance_batch.append((
                    base["instance"] + n_instances, sop, series_pk, SOP[modality], str(k + 1),
                    k + 1, "512", "512", "", "1.2.840.10008.1.2.1",
                    f"{study_uid}/{series_uid}/{sop}.v1.dcm", 526000, stored_at, "16"))
        if len(instance_batch) >= 200_000 or s == len(plans) - 1:
            target.insert("study", study_cols, studies)
            target.insert("series", ["id", "series_instance_uid", "study_pk", "modality",
                                     "series_number", "series_description", "body_part_examined",
                                     "series_date"], series_rows)
            target.insert("instance", sop_cols, instance_batch)
            target.commit()
            keys_dates.extend(st[3] for st in studies[:50])
            studies, series_rows, instance_batch = [], [], []
            log(f"{s + 1} studies, {n_series} series, {n_instances} instances "
                f"({time.time() - t0:.0f} s)")

    if args.xds_template:
        generate_xds(target, args, rng, base, plans, uid_root)
    target.finish()
    keys = {
        "patient_ids": [p[1] for p in rng.sample(patients, min(2000, len(patients)))],
        "names": [p[3] for p in rng.sample(patients, min(2000, len(patients)))],
        "dates": keys_dates,
        "studies": args.studies, "instances": n_instances, "series": n_series,
        "patients": n_patients,
    }
    path = args.keys or (args.sqlite or "postgres") + ".keys.json"
    with open(path, "w") as f:
        json.dump(keys, f)
    log(f"done: {n_patients} patients, {args.studies} studies, {n_series} series, "
        f"{n_instances} instances; keys in {path}")


def generate_xds(target, args, rng, base, plans, uid_root):
    """Clone the template's DocumentEntry/SubmissionSet/association per study."""
    with open(args.xds_template) as f:
        tpl = json.load(f)
    # The identifiers of the template that each clone gets its own value for.
    subst = []
    for o in tpl["objects"]:
        subst += [o["entry_uuid"], o["unique_id"]]
    for a in tpl["associations"]:
        subst.append(a["entry_uuid"])
    subst = sorted(set(s for s in subst if s), key=len, reverse=True)
    tpl_patient = tpl["objects"][0]["patient_id"]          # BSN^^^&2.16.840.1.113883.2.4.6.3&ISO
    tpl_bsn = tpl_patient.split("^")[0]
    tpl_study = tpl["study_instance_uid"]
    objects, assocs, pubs = [], [], []
    n_obj = n_assoc = 0
    rng2 = random.Random(args.seed + 7)
    rng2.random()
    t0 = time.time()
    for s, (patient, _, _) in enumerate(plans):
        study_pk = base["study"] + s + 1
        # The study UID as cmd_generate drew it is not kept: read it back per batch below.
        mapping = {}
        for old in subst:
            if old.startswith("urn:uuid:"):
                mapping[old] = f"urn:uuid:{uuid.UUID(int=rng2.getrandbits(128), version=4)}"
            else:
                mapping[old] = f"2.25.{uuid.UUID(int=rng2.getrandbits(128), version=4).int}"
        objects.append((study_pk, patient[1], mapping))
    # Study UIDs by row id.
    if target.sqlite:
        uids = dict(target.db.execute(
            "SELECT id, study_instance_uid FROM study WHERE id > ?", (base["study"],)))
    else:
        out = subprocess.run(["psql", "-X", "-qAt", "-F", "\t", target.postgres, "-c",
                              f"SELECT id, study_instance_uid FROM study WHERE id > {base['study']}"],
                             check=True, capture_output=True, text=True).stdout
        uids = {int(a): b for a, b in (line.split("\t") for line in out.splitlines() if line)}
    obj_rows, assoc_rows = [], []
    now = int(time.time())

    def clone(text, mapping, bsn, study_uid):
        for old, new in mapping.items():
            text = text.replace(old, new)
        return text.replace(tpl_bsn, bsn).replace(tpl_study, study_uid)

    for study_pk, bsn, mapping in objects:
        study_uid = uids[study_pk]
        de_uuid = ""
        for o in tpl["objects"]:
            n_obj += 1
            row = tuple(clone(o[c], mapping, bsn, study_uid) for c in
                        ["entry_uuid", "kind", "unique_id", "patient_id", "status",
                         "study_instance_uid", "metadata"])
            obj_rows.append((base["xds_object"] + n_obj, *row))
            if o["kind"] == "DocumentEntry":
                de_uuid = row[0]
        for a in tpl["associations"]:
            n_assoc += 1
            row = tuple(clone(a[c], mapping, bsn, study_uid) for c in
                        ["entry_uuid", "association_type", "source_uuid", "target_uuid",
                         "status", "metadata"])
            assoc_rows.append((base["xds_association"] + n_assoc, *row))
        pubs.append((study_uid, de_uuid, None, now - 86400 * 29))
        if len(obj_rows) >= 100_000 or study_pk == objects[-1][0]:
            target.insert("xds_object", ["id", "entry_uuid", "kind", "unique_id", "patient_id",
                                         "status", "study_instance_uid", "metadata"], obj_rows)
            target.insert("xds_association", ["id", "entry_uuid", "association_type",
                                              "source_uuid", "target_uuid", "status", "metadata"],
                          assoc_rows)
            obj_rows, assoc_rows = [], []
    # Publications cover every arrival: nothing left to publish.
    arrivals = {}
    if target.sqlite:
        arrivals = dict(target.db.execute(
            "SELECT study_instance_uid, arrivals FROM study WHERE id > ?", (base["study"],)))
    else:
        out = subprocess.run(["psql", "-X", "-qAt", "-F", "\t", target.postgres, "-c",
                              f"SELECT study_instance_uid, arrivals FROM study WHERE id > {base['study']}"],
                             check=True, capture_output=True, text=True).stdout
        arrivals = {a: int(b) for a, b in (line.split("\t") for line in out.splitlines() if line)}
    target.insert("xds_publication", ["study_instance_uid", "entry_uuid", "arrivals",
                                      "published_at"],
                  [(u, e, arrivals[u], t) for u, e, _, t in pubs])
    # As registry_submit keeps it (migration 0010).
    sql = f"UPDATE study SET published_arrivals = arrivals WHERE id > {base['study']}"
    if target.has_table("patient_name_word"):
        if target.sqlite:
            target.db.execute(sql)
        else:
            target.scalar(sql)
    target.commit()
    log(f"{n_obj} registry objects, {n_assoc} associations ({time.time() - t0:.0f} s)")


def cmd_template(args):
    if args.sqlite:
        db = sqlite3.connect(args.sqlite)
        db.row_factory = sqlite3.Row
        objs = [dict(r) for r in db.execute(
            "SELECT entry_uuid, kind, unique_id, patient_id, status, study_instance_uid, metadata "
            "FROM xds_object ORDER BY id")]
        assocs = [dict(r) for r in db.execute(
            "SELECT entry_uuid, association_type, source_uuid, target_uuid, status, metadata "
            "FROM xds_association ORDER BY id")]
    else:
        def rows(sql):
            out = subprocess.run(["psql", "-X", "-qAt", args.postgres, "-c",
                                  f"SELECT json_agg(t) FROM ({sql}) t"],
                                 check=True, capture_output=True, text=True).stdout
            return json.loads(out) if out.strip() else []
        objs = rows("SELECT entry_uuid, kind, unique_id, patient_id, status, study_instance_uid, "
                    "metadata FROM xds_object ORDER BY id")
        assocs = rows("SELECT entry_uuid, association_type, source_uuid, target_uuid, status, "
                      "metadata FROM xds_association ORDER BY id")
    studies = {o["study_instance_uid"] for o in objs if o["study_instance_uid"]}
    if len(studies) != 1:
        sys.exit(f"the template needs exactly one published study, found {len(studies)}")
    with open(args.out, "w") as f:
        json.dump({"study_instance_uid": studies.pop(), "objects": objs,
                   "associations": assocs}, f, indent=1)
    log(f"template: {len(objs)} objects, {len(assocs)} associations -> {args.out}")


# --- queries ------------------------------------------------------------------------------

def percentile(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(1, int(-(-p * len(v) // 100)))
    return v[min(k, len(v)) - 1]


def make_queries(keys, n, seed, limit):
    rng = random.Random(seed)
    kinds = []

    def name_prefix():
        name = rng.choice(keys["names"])
        family = name.split("^")[0]
        return family[: max(3, min(len(family), rng.randint(3, 6)))]

    def fuzzy_word():
        name = normalize_name(rng.choice(keys["names"]))
        words = [w for w in name.replace("^", " ").split(" ") if len(w) >= 3]
        w = rng.choice(words)
        return w[: rng.randint(3, len(w))]

    def date_range(days):
        d = rng.choice(keys["dates"])
        t = time.mktime(time.strptime(d, "%Y%m%d")) + days * 86400
        return f"{d}-{time.strftime('%Y%m%d', time.localtime(t))}"

    lim = f"&limit={limit}"
    makers = [
        ("PatientID", lambda: f"PatientID={rng.choice(keys['patient_ids'])}"),
        ("PatientName wildcard", lambda: f"PatientName={requests_quote(name_prefix())}*{lim}"),
        ("PatientName fuzzy", lambda: f"PatientName={requests_quote(fuzzy_word())}"
                                      f"&fuzzymatching=true{lim}"),
        ("StudyDate 1 day", lambda: f"StudyDate={date_range(0)}{lim}"),
        ("StudyDate 1 month", lambda: f"StudyDate={date_range(30)}{lim}"),
        ("ModalitiesInStudy", lambda: f"ModalitiesInStudy={rng.choice(['CT', 'MR', 'US', 'DX', 'NM', 'PT'])}{lim}"),
        ("Modality + 1 week", lambda: f"ModalitiesInStudy={rng.choice(['CT', 'MR', 'NM'])}"
                                      f"&StudyDate={date_range(7)}{lim}"),
    ]
    for i in range(n):
        for kind, make in makers:
            kinds.append((kind, make()))
    rng.shuffle(kinds)
    return kinds


def requests_quote(s):
    from urllib.parse import quote
    return quote(s, safe="")


FIND_DOCUMENTS = """<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://www.w3.org/2005/08/addressing">
 <soap:Header>
  <wsa:Action>{action}</wsa:Action>
  <wsa:MessageID>urn:uuid:{msgid}</wsa:MessageID>
  <wsa:To>{to}</wsa:To>
 </soap:Header>
 <soap:Body>
  <query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
   <query:ResponseOption returnType="LeafClass" returnComposedObjects="true"/>
   <rim:AdhocQuery id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d">
    <rim:Slot name="$XDSDocumentEntryPatientId"><rim:ValueList><rim:Value>'{patient}^^^&amp;2.16.840.1.113883.2.4.6.3&amp;ISO'</rim:Value></rim:ValueList></rim:Slot>
    <rim:Slot name="$XDSDocumentEntryStatus"><rim:ValueList><rim:Value>('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')</rim:Value></rim:ValueList></rim:Slot>
   </rim:AdhocQuery>
  </query:AdhocQueryRequest>
 </soap:Body>
</soap:Envelope>"""


def cmd_queries(args):
    import requests
    with open(args.keys) as f:
        keys = json.load(f)
    s = requests.Session()
    base = args.base.rstrip("/")
    headers = {"Accept": "application/dicom+json"}

    def qido(qs):
        t0 = time.perf_counter()
        r = s.get(f"{base}/dicomweb/studies?{qs}", headers=headers)
        body = r.content
        ms = (time.perf_counter() - t0) * 1000
        if r.status_code not in (200, 204):
            sys.exit(f"QIDO-RS {qs}: HTTP {r.status_code}: {body[:300]!r}")
        return ms, (len(json.loads(body)) if body.strip() else 0)

    tokens = []
    if args.jwt_key:
        # One ES256 token per ITI-18 request (each jti is single-use), minted before the run.
        import jwt  # PyJWT
        with open(args.jwt_key, "rb") as f:
            key = f.read()
        now = int(time.time())
        run = uuid.uuid4().hex[:12]
        for i in range(args.n + args.warmup):
            claims = {"iss": args.issuer, "aud": args.audience, "sub": "index-scale",
                      "iat": now, "nbf": now, "exp": now + 3600, "jti": f"ix-{run}-{i}",
                      "ura": "00000123", "uzi": "900000001", "role": "01.015",
                      "purpose_of_use": "TREATMENT"}
            tokens.append(jwt.encode(claims, key, algorithm="ES256", headers={"kid": "bench-1"}))

    def soap(endpoint, action, patient):
        body = FIND_DOCUMENTS.format(action=action, msgid=uuid.uuid4(), to=f"{base}{endpoint}",
                                     patient=patient)
        headers = {"Content-Type": f'application/soap+xml; charset=UTF-8; action="{action}"'}
        if tokens:
            headers["Authorization"] = "Bearer " + tokens.pop()
        t0 = time.perf_counter()
        r = s.post(f"{base}{endpoint}", data=body.encode(), headers=headers)
        ms = (time.perf_counter() - t0) * 1000
        text = r.text
        if r.status_code != 200 or "ResponseStatusType:Success" not in text:
            sys.exit(f"{action}: HTTP {r.status_code}: {text[:600]}")
        return ms, len(re.findall(r"<(?:\w+:)?ExtrinsicObject[\s>]", text))

    jobs = [(k, lambda qs=qs: qido(qs)) for k, qs in make_queries(keys, args.n, args.seed, args.limit)]
    warm = [(k, lambda qs=qs: qido(qs)) for k, qs in make_queries(keys, args.warmup, args.seed + 99, args.limit)]
    if args.soap:
        rng = random.Random(args.seed)
        for kind, endpoint, action in [("ITI-18 FindDocuments", "/xds/registry",
                                        "urn:ihe:iti:2007:RegistryStoredQuery")]:
            for i in range(args.n):
                p = rng.choice(keys["patient_ids"])
                jobs.append((kind, lambda p=p, e=endpoint, a=action: soap(e, a, p)))
            for i in range(args.warmup):
                p = rng.choice(keys["patient_ids"])
                warm.append((kind, lambda p=p, e=endpoint, a=action: soap(e, a, p)))
        random.Random(args.seed + 1).shuffle(jobs)
    for _, job in warm:
        job()
    per_kind, results = {}, {}
    t0 = time.time()
    for kind, job in jobs:
        ms, n = job()
        per_kind.setdefault(kind, []).append(ms)
        results.setdefault(kind, []).append(n)
    wall = time.time() - t0
    print(f"| query ({args.label}) | n | p50 ms | p99 ms | max ms | mean results |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in sorted(per_kind, key=lambda k: [j[0] for j in jobs].index(k)):
        v = per_kind[kind]
        r = results[kind]
        print(f"| {kind} | {len(v)} | {percentile(v, 50):.1f} | {percentile(v, 99):.1f} | "
              f"{max(v):.1f} | {sum(r) / len(r):.1f} |")
    print(f"\n{len(jobs)} requests in {wall:.1f} s, load average {os.getloadavg()[0]:.2f}")


# --- explain ------------------------------------------------------------------------------

def hot_queries(keys, dialect, stored=False):
    """The gateway's SQL for each hot query (as find_sql / registry_objects / upsert_in build
    it), with example values. `stored`: the index has the study values of migration 0013,
    and a page is chosen by ids first (find_sql of that version)."""
    ph = (lambda i: f"${i}") if dialect == "pg" else (lambda i: "?")
    study_cols = ("p.patient_name, p.patient_id, p.issuer_of_patient_id, p.patient_birth_date, "
                  "p.patient_sex, st.study_instance_uid, st.study_date, st.study_time, "
                  "st.accession_number, st.study_id, st.study_description, "
                  "st.referring_physician_name, st.id")
    chain = "FROM study st JOIN patient p ON p.id = st.patient_pk"
    order = " ORDER BY st.study_instance_uid"
    if stored:
        study_cols += ", st.num_series, st.num_instances, st.modalities, st.sop_classes"

    def page(cond, limit=101):
        if stored:
            # The ids from the tables the keys name (study alone when no patient key).
            inner = chain if "p." in cond else "FROM study st"
            return (f"SELECT {study_cols} {chain} WHERE st.id IN (SELECT st.id {inner} WHERE "
                    f"{cond}{order} LIMIT {limit}){order}")
        return f"SELECT {study_cols} {chain} WHERE {cond}{order} LIMIT {limit}"

    rng = random.Random(5)
    bsn = rng.choice(keys["patient_ids"])
    name = rng.choice(keys["names"]).split("^")[0][:4]
    fuzzy = normalize_name(rng.choice(keys["names"]).split("^")[1])[:4]
    d = rng.choice(keys["dates"])
    word = f"p.id IN (SELECT w.patient_pk FROM patient_name_word w WHERE w.word LIKE {ph(1)} ESCAPE '\\')"
    qs = [
        ("QIDO PatientID", page(f"p.patient_id = {ph(1)}", 1000), [bsn]),
        ("QIDO PatientName wildcard", page(f"p.patient_name LIKE {ph(1)} ESCAPE '\\'"), [name + "%"]),
        ("QIDO PatientName wildcard, broad", page(f"p.patient_name LIKE {ph(1)} ESCAPE '\\'"), ["van%"]),
        ("QIDO PatientName fuzzy", page(word), [f"{fuzzy}%"]),
        ("QIDO PatientName fuzzy, nothing matches", page(word), ["zzqx%"]),
        ("QIDO StudyDate range", page(f"(st.study_date <> '' AND st.study_date >= {ph(1)} AND "
                                      f"st.study_date <= {ph(2)})"), [d, d[:6] + "28"]),
        ("QIDO ModalitiesInStudy", page("EXISTS (SELECT 1 FROM series se WHERE se.study_pk = st.id "
                                        f"AND se.modality IN ({ph(1)}))"), ["NM"]),
        ("QIDO ModalitiesInStudy, common", page("EXISTS (SELECT 1 FROM series se WHERE se.study_pk = st.id "
                                                f"AND se.modality IN ({ph(1)}))"), ["CT"]),
    ]
    if not stored:
        qs += [
            ("QIDO computed: counts", "SELECT se.study_pk, COUNT(DISTINCT se.id), COUNT(i.id) FROM series se "
             "LEFT JOIN instance i ON i.series_pk = se.id WHERE se.study_pk IN ({ids}) GROUP BY se.study_pk", []),
            ("QIDO computed: SOP classes", "SELECT DISTINCT se.study_pk, i.sop_class_uid FROM instance i "
             "JOIN series se ON se.id = i.series_pk WHERE se.study_pk IN ({ids})", []),
        ]
    qs += [
        ("ITI-18 FindDocuments", "SELECT entry_uuid, kind, unique_id, patient_id, status, study_instance_uid, "
         f"metadata FROM xds_object WHERE patient_id = {ph(1)} AND kind = {ph(2)} ORDER BY id",
         [f"{bsn}^^^&2.16.840.1.113883.2.4.6.3&ISO", "DocumentEntry"]),
        ("publisher: studies to publish", "SELECT s.study_instance_uid, s.last_arrival, s.arrivals FROM study s "
         "LEFT JOIN xds_publication p ON p.study_instance_uid = s.study_instance_uid WHERE "
         "s.arrivals > s.published_arrivals AND s.last_arrival <= "
         f"{ph(1)} AND s.arrivals > 0 AND (p.study_instance_uid IS NULL OR p.arrivals < s.arrivals) "
         "ORDER BY s.last_arrival, s.id LIMIT 100", [int(time.time()) - 300]),
        ("C-STORE: old instance", "SELECT i.series_pk, se.study_pk, st.patient_pk, i.blob_key FROM instance i "
         "JOIN series se ON se.id = i.series_pk JOIN study st ON st.id = se.study_pk "
         f"WHERE i.sop_instance_uid = {ph(1)}", ["1.2.3.4"]),
        ("C-STORE: prune series", f"SELECT 1 FROM series WHERE id = {ph(1)} AND NOT EXISTS "
         f"(SELECT 1 FROM instance WHERE series_pk = {ph(2)})", [5, 5]),
    ]
    return qs


def cmd_explain(args):
    with open(args.keys) as f:
        keys = json.load(f)
    dialect = "pg" if args.postgres else "sqlite"
    probe = "SELECT count(*) FROM information_schema.columns WHERE table_name = 'study' AND column_name = 'num_series'"
    if dialect == "pg":
        stored = subprocess.run(["psql", "-X", "-qAt", args.postgres, "-c", probe],
                                capture_output=True, text=True).stdout.strip() == "1"
    else:
        stored = sqlite3.connect(args.sqlite).execute(
            "SELECT count(*) FROM pragma_table_info('study') WHERE name = 'num_series'").fetchone()[0] > 0
    ids = None
    for title, sql, params in hot_queries(keys, dialect, stored):
        if "{ids}" in sql:
            sql = sql.replace("{ids}", ids or "1")
        print(f"### {title}\n\n```sql\n{sql}\n-- {params}\n```\n\n```")
        if dialect == "pg":
            lits = []
            for p in params:
                lits.append(str(p) if isinstance(p, int) else "'" + str(p).replace("'", "''") + "'")
            text = sql
            for i in range(len(params), 0, -1):
                text = text.replace(f"${i}", lits[i - 1])
            out = subprocess.run(["psql", "-X", "-qAt", args.postgres, "-c",
                                  f"EXPLAIN (ANALYZE, BUFFERS) {text}"],
                                 capture_output=True, text=True)
            print(out.stdout + out.stderr, end="")
            if title == "QIDO ModalitiesInStudy" or ids is None:
                r = subprocess.run(["psql", "-X", "-qAt", args.postgres, "-c",
                                    text.replace(" LIMIT 1000", " LIMIT 101")],
                                   capture_output=True, text=True).stdout
                got = [line.split("|")[-1] for line in r.splitlines() if line]
                if got:
                    ids = ", ".join(got)
        else:
            db = sqlite3.connect(args.sqlite)
            db.execute("PRAGMA case_sensitive_like = ON")
            for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params):
                print(f"{row[0]:>3} {row[1]:>3} {row[3]}")
            t0 = time.perf_counter()
            got = db.execute(sql, params).fetchall()
            print(f"-- {len(got)} rows in {(time.perf_counter() - t0) * 1000:.1f} ms (Python sqlite3 {sqlite3.sqlite_version})")
            if title == "QIDO ModalitiesInStudy" or (ids is None and got and len(got[0]) > 5):
                ids = ", ".join(str(r[-1]) for r in got) or "1"
        print("```\n")


def log(msg):
    print(f"== {msg}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(required=True)

    def backend(p):
        g = p.add_mutually_exclusive_group(required=True)
        g.add_argument("--sqlite")
        g.add_argument("--postgres")

    p = sub.add_parser("generate")
    backend(p)
    p.add_argument("--studies", type=int, default=100_000)
    p.add_argument("--instances", type=int, default=2_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--xds-template")
    p.add_argument("--keys")
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("template")
    backend(p)
    p.add_argument("out")
    p.set_defaults(func=cmd_template)
    p = sub.add_parser("queries")
    p.add_argument("base")
    p.add_argument("keys")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit", type=int, default=101)
    p.add_argument("--soap", action="store_true")
    p.add_argument("--label", default="")
    p.add_argument("--jwt-key", help="EC P-256 key (PEM) that signs ITI-18's bearer tokens")
    p.add_argument("--issuer", default="https://idp.index-scale.test")
    p.add_argument("--audience", default="beeldbrug-index-scale")
    p.set_defaults(func=cmd_queries)
    p = sub.add_parser("explain")
    backend(p)
    p.add_argument("keys")
    p.set_defaults(func=cmd_explain)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
