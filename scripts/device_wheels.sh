# Sourced (with $python set) by the scripts that run on a lent GPU machine: install the wheels carried in
# ${WHEELS:-.whl} (made by scripts/device_payload.sh) into /tmp/site and put that first on PYTHONPATH; nothing
# without wheels.
if compgen -G "${WHEELS:-.whl}/*.whl" > /dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "${WHEELS:-.whl}"/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
