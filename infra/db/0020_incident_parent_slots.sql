-- Every incident gets its row in incident_correlations (its parent slot, NULL while it has no parent) when it is
-- first projected, and a `correlated` event writes the parent into that same row. The child's projection and its
-- parent's `correlated` event therefore meet on one unique key: if they run in concurrent transactions, one waits
-- for the other to commit, and whichever comes second sees the first. (Without this, each could miss the other's
-- uncommitted row and leave the child without its parent_id.)
ALTER TABLE incident_correlations
    ALTER COLUMN parent_id DROP NOT NULL,
    ALTER COLUMN correlated_at DROP NOT NULL;
