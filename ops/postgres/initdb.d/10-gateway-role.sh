#!/bin/sh
# Runs once, when PostgreSQL's volume is new: makes the gateway's administrative role, not a superuser (README, Security), with its password from the database_password secret.
set -eu
# psql reads the password from the file itself (\set with backquotes): it is never on a command line.
psql -v ON_ERROR_STOP=1 --quiet --username "${POSTGRES_USER:-postgres}" --dbname postgres <<'SQL'
\set password `cat /run/secrets/database_password`
CREATE ROLE dbgateway_admin LOGIN CREATEDB CREATEROLE PASSWORD :'password';
SQL
