"""Data for probing: the question bank and WVS-7 sections (questions), value-action scenarios and
their verdict parser (scenarios), WVS-7 human distributions (wvs_human), pinned public sources
(sources), ASCII transliteration (transliterate) and TFDS builders (tfds_builders; imports
tensorflow_datasets, so it is not imported here)."""
