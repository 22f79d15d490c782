#!/bin/sh
# First start of the PostgreSQL container: mailmove's own role and database beside Temporal's.
set -eu
password="$(cat /run/secrets/postgres_password)"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" <<SQL
CREATE ROLE mailmove LOGIN PASSWORD '${password}';
CREATE DATABASE mailmove OWNER mailmove;
SQL
