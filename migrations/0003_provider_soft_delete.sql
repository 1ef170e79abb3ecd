-- A provider that only deleted model configs (kept for spend history) still reference cannot
-- be removed; DELETE then hides it instead: gone from every route (404), disabled, its key
-- erased. Additive: older chatd versions ignore the column.
ALTER TABLE providers ADD COLUMN deleted boolean NOT NULL DEFAULT false;
