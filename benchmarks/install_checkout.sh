# Sourced by the GPU scripts, which run from a bare checkout: compare imports as `compare`
# only once installed (pyproject.toml maps runner/ onto that name), so install it in place,
# without dependencies and without reaching the network (the GPU machine has no internet).
python3 -m pip install --quiet --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
  || python3 -m pip install --quiet --no-deps --no-build-isolation --user -e . \
  || { echo "could not install the checkout (pip install --no-deps -e .)"; exit 1; }
