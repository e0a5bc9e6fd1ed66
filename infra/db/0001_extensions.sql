-- PostGIS for positions and areas. Created by the superuser when the local cluster starts; here again so a
-- database prepared by other means (docker-compose, a managed service) gets it from the migration.
CREATE EXTENSION IF NOT EXISTS postgis;
