# The two commands a fresh machine needs (see README.md).
.PHONY: demo test

demo:
	bash scripts/setup_env.sh
	.venv/bin/condnet demo --out demo_output

test:
	bash scripts/test.sh
