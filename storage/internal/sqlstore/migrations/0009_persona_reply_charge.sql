-- A pending persona reply's charge: the ledger hold of the attempt
-- that is writing it, recorded before the model is asked, so that a
-- worker taking the reply over after a crash can tell whether it was
-- billed already (see package personas).
ALTER TABLE persona_messages ADD COLUMN charge TEXT NOT NULL DEFAULT '';
