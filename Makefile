# The two commands a fresh machine needs (see README.md).
.PHONY: demo test

# A second run replaces the files of the first (demo_output/summary.json marks one); other files stay.
demo:
	bash scripts/setup_env.sh
	.venv/bin/condnet demo --out demo_output $(if $(wildcard demo_output/summary.json),--overwrite)

test:
	bash scripts/test.sh
