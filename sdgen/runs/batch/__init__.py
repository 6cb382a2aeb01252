"""`sdgen batch`: many prompts, one model load, stable names and seeds, a manifest, resume, many processes.

- input.py     reading prompts files and stdin (txt, jsonl, csv, tsv) line by line into items
- plan.py      items -> planned images (derived seeds, names) -> chunks that share U-Net calls
- manifest.py  manifest.jsonl: one record per image, what counts as done, merging process parts
- run.py       run_batch: check, load once, generate chunk by chunk, write, record, summarise
"""
