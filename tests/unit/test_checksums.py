"""Flyway-compatible CRC32 checksums, checked against values Flyway itself recorded.

The known pairs below come from a public project that Flyway manages: navikt/lydia-api. Its
migration files (src/main/resources/db/migration/2022/, commit 3b5192f1 / ca849f81) and the
checksums Flyway wrote for them into ``flyway_schema_history`` (scripts/db/lydia_api_container_db_
localhost-2023_08_29_15_47_10-dump.sql, rows 2, 7 and 29) must agree with ours, or a database
adopted from Flyway would report every file as changed.
"""

import pytest

from polymigrate.checksums import flyway_checksum, sha256

# V29__index_tapte_dagsverk.sql: one line, no final newline
V29 = ("create index idx_sykefraver_periode_tapte_dagsverk on sykefravar_statistikk_virksomhet"
       "(arstall, kvartal, tapte_dagsverk DESC NULLS LAST)")
# V7__unique_constraint_virksomhet.sql: several lines with a blank line
V7 = ("DELETE FROM\n    virksomhet a\n    USING virksomhet b\nWHERE\n        a.id < b.id\n  AND a.orgnr = b.orgnr;\n"
      "\nalter table virksomhet\n  add constraint virksomhet_unik_orgnr unique (orgnr);")
# V2__create_virksomhet_adresse.sql: its CRC32 is above 2^31, so Flyway stored a negative int
V2 = ("alter table virksomhet_metadata rename to virksomhet_statistikk_metadata;\n"
      "alter table virksomhet_statistikk_metadata drop column navn;\n\n"
      "create table virksomhet\n(\n"
      "    id            serial primary key,\n"
      "    orgnr         varchar  not null,\n"
      "    land          varchar  not null,\n"
      "    landkode      varchar  not null,\n"
      "    postnummer    smallint not null,\n"
      "    poststed      varchar  not null,\n"
      "    kommune       varchar  not null,\n"
      "    kommunenummer varchar  not null\n);\n\n"
      "create index idx_orgnr_virksomhet on virksomhet(orgnr);\n"
      "create index idx_orgnr_virksomhet_statistikk_metadata on virksomhet_statistikk_metadata(orgnr);\n"
      "create index idx_orgnr_sykefravar_statistikk_virksomhet on sykefravar_statistikk_virksomhet(orgnr);")


@pytest.mark.parametrize("text, recorded_by_flyway", [(V29, 1914625834), (V7, 2085819180), (V2, -64248919)])
def test_matches_checksums_recorded_by_flyway(text, recorded_by_flyway):
    assert flyway_checksum(text) == recorded_by_flyway


def test_line_endings_do_not_matter():
    lf = V7
    assert flyway_checksum(lf.replace("\n", "\r\n")) == 2085819180
    assert flyway_checksum(lf.replace("\n", "\r")) == 2085819180
    assert flyway_checksum(lf + "\n") == 2085819180  # a final newline adds no line content


def test_leading_bom_is_ignored():
    assert flyway_checksum("\ufeff" + V29) == 1914625834
    assert flyway_checksum("\ufeff" + V7.replace("\n", "\r\n")) == 2085819180


def test_content_changes_do_change_it():
    assert flyway_checksum(V29 + " ") != 1914625834
    assert flyway_checksum(V29.upper()) != 1914625834
    # a BOM in the middle is content, not an encoding marker
    assert flyway_checksum(V29[:10] + "\ufeff" + V29[10:]) != 1914625834


def test_signed_32_bit_range_and_utf8_content():
    value = flyway_checksum("INSERT INTO t VALUES ('Næring', 'Utøvende');")
    assert -(2 ** 31) <= value < 2 ** 31
    assert value != flyway_checksum("INSERT INTO t VALUES ('Naring', 'Utovende');")


def test_sha256_is_exact_bytes():
    assert sha256("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256("a\r\n") != sha256("a\n")  # unlike the Flyway checksum
