"""The run contract shared by coz.zoom, coz.evaluate, coz.train_sr and coz.train_grpo (README "Runs,
resume and exit codes"): one process per run folder (:mod:`coz.run.lock`), resume rules declared once
(:mod:`coz.run.resume`), configs typed and checked before any model loads (:mod:`coz.run.schema`; the
rules joining keys in :mod:`coz.run.validate`), one output name per input (:mod:`coz.run.names`) and
the same exit codes for every tool (:mod:`coz.run.exit_codes`); the two trainers' checkpoints
(:mod:`coz.run.checkpoint_files`, and their Lightning side :mod:`coz.run.checkpoints`).
"""
