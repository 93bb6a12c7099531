-- QIDO-RS returns Bits Allocated at instance level (PS3.18 Table 10.6.3-5).
ALTER TABLE instance ADD COLUMN bits_allocated TEXT NOT NULL DEFAULT '';
