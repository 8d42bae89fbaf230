"""The PostgreSQL generator's decisions on plain statements and type names (no server; issue 26)."""

from __future__ import annotations

import pytest

from polymigrate.commands.diff import rerunnable
from polymigrate.schemadiff import NamingContext
from polymigrate.schemadiff.postgresql import layout, render, rewrites, widens


def test_an_index_on_an_existing_table_is_built_concurrently_with_what_hangs_on_it():
    lay = layout([
        'create table "public"."orders" ("id" bigint not null, "customer_id" bigint)',
        'CREATE INDEX orders_customer ON public.orders USING btree (customer_id)',
        'CREATE UNIQUE INDEX customer_email_key ON public.customer USING btree (email)',
        'alter table "public"."customer" add constraint "customer_email_key" UNIQUE using index "customer_email_key"',
        'alter table "public"."orders" add constraint "orders_email_fkey" FOREIGN KEY ("email") '
        'REFERENCES "public"."customer"("email") not valid',
        'alter table "public"."orders" validate constraint "orders_email_fkey"',
    ], existing_tables={"public.customer"})
    assert lay.main == ['create table "public"."orders" ("id" bigint not null, "customer_id" bigint)',
                        'CREATE INDEX orders_customer ON public.orders USING btree (customer_id)']
    assert lay.concurrent[0] == ("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS customer_email_key "
                                 "ON public.customer USING btree (email)")
    # the key attached to the concurrent index, the foreign key needing it, and the validation follow it
    assert [s.split('"')[3] for s in lay.concurrent[1:]] == ["customer", "orders", "orders"]
    assert not lay.contract


def test_drops_go_to_contract_only_when_the_diff_also_adds_and_never_what_it_recreates():
    stmts = ['alter table "public"."t" drop constraint "t_check"',
             'alter table "public"."t" drop column "legacy"',
             'alter table "public"."t" add column "email" text',
             'alter table "public"."t" add constraint "t_check" CHECK ((n > 1)) not valid']
    lay = layout(stmts, {"public.t"})
    assert lay.contract == ['alter table "public"."t" drop column "legacy"']
    assert lay.main[0] == 'alter table "public"."t" drop constraint "t_check"'  # re-added just after: stays before
    only_drops = layout(['drop table "public"."old"'], {"public.old"})
    assert only_drops.main == ['drop table "public"."old"'] and not only_drops.contract


def test_files_are_named_after_the_next_version_with_their_headers():
    lay = layout(['alter table "public"."t" add column "email" text',
                  'CREATE INDEX t_email ON public.t USING btree (email)',
                  'alter table "public"."t" drop column "legacy"'], {"public.t"})
    files = render(lay, NamingContext(None, "7", "Add e-mail"), source="schema")
    assert [f.name for f in files] == ["V7__add_e_mail.sql", "V7.1__add_e_mail_concurrently.sql",
                                       "V7.2__add_e_mail_contract.sql"]
    assert [f.text.splitlines()[0] for f in files] == [
        "-- polymigrate: phase=expand, lock_timeout=5s",
        "-- polymigrate: transactional=false, phase=expand, lock_timeout=5s",
        "-- polymigrate: phase=contract, lock_timeout=5s"]


@pytest.mark.parametrize("old,new,widening,rewriting", [
    ("character varying(50)", "character varying(100)", True, False),
    ("character varying(100)", "character varying(50)", False, True),
    ("character varying(50)", "text", True, False),
    ("text", "character varying(50)", False, True),
    ("smallint", "integer", True, True),
    ("integer", "smallint", False, True),
    ("numeric(10,2)", "numeric(12,2)", True, False),
    ("numeric(10,2)", "numeric(10,4)", False, True),
    ("timestamp without time zone", "timestamp with time zone", True, True),
    ("integer[]", "bigint", False, True),
])
def test_type_changes_are_judged_for_the_undo_and_for_rewrites(old, new, widening, rewriting):
    assert widens(old, new) is widening
    assert rewrites(old, new) is rewriting


def test_a_captured_drift_file_runs_as_a_no_op_where_the_change_already_is():
    text = ('alter table "shop"."orders" add column "note" text;\n'
            'CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_note ON shop.orders USING btree (note);\n'
            'CREATE UNIQUE INDEX orders_code ON shop.orders USING btree (code);\n'
            'create table "shop"."x" ("id" int);\n'
            'alter table "shop"."orders" drop column "old";\n')
    assert rerunnable(text) == (
        'alter table "shop"."orders" add column if not exists "note" text;\n'
        'CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_note ON shop.orders USING btree (note);\n'
        'CREATE UNIQUE INDEX if not exists orders_code ON shop.orders USING btree (code);\n'
        'create table if not exists "shop"."x" ("id" int);\n'
        'alter table "shop"."orders" drop column if exists "old";\n')


def test_a_column_dropped_and_one_of_its_type_added_is_named_as_a_possible_rename():
    from polymigrate.schemadiff.postgresql import possible_renames

    before = {"public.datasets.last_modified": "timestamp with time zone", "public.datasets.name": "text"}
    after = {"public.datasets.last_modified_at": "timestamp with time zone", "public.datasets.name": "text",
             "public.datasets.size": "bigint"}
    [note] = possible_renames(before, after)
    assert note.startswith("column public.datasets.last_modified is dropped and last_modified_at "
                           "(timestamp with time zone) added: if this is a rename")


def test_constraint_index_and_view_drops_stay_in_results_order_only_data_waits_for_contract():
    # Marquez: the primary key goes before its column may drop NOT NULL; a view before a column it reads changes type
    stmts = ['drop view if exists "public"."jobs_view"',
             'alter table "public"."m" drop constraint "m_pkey"',
             'drop index if exists "public"."m_pkey"',
             'alter table "public"."m" alter column "job_uuid" drop not null',
             'alter table "public"."jobs" alter column "created_at" set data type timestamp with time zone',
             'alter table "public"."m" add column "kind" text',
             'drop table "public"."old"',
             'drop sequence if exists "public"."old_id_seq"']
    lay = layout(stmts, {"public.m", "public.jobs", "public.old"})
    assert lay.main == stmts[:6]
    assert lay.contract == stmts[6:]


def test_in_a_folder_whose_newest_file_is_contract_the_additions_take_that_phase(tmp_path):
    from polymigrate.catalog import discover
    from polymigrate.schemadiff.postgresql import folder_phase

    (tmp_path / "V1__a.sql").write_text("-- polymigrate: phase=expand\nCREATE TABLE t (id int, old text);\n")
    (tmp_path / "V2__b.sql").write_text("-- polymigrate: phase=contract\nALTER TABLE t DROP COLUMN old;\n")
    assert folder_phase(tmp_path) == "contract"
    lay = layout(['alter table "public"."t" add column "email" text'], {"public.t"})
    files = render(lay, NamingContext(tmp_path, "3", "email"), source="schema", floor=folder_phase(tmp_path))
    assert files[0].text.startswith("-- polymigrate: phase=contract, lock_timeout=5s")
    assert "newest file is in phase contract" in lay.notes[-1]
    (tmp_path / files[0].name).write_text(files[0].text)
    assert discover("d", "postgresql", tmp_path).problems == []  # validate accepts the order
