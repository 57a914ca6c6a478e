"""devices/catalog.py and devices/data/*.csv against the published module specifications.

TABLE1 (module RAM, GPU architecture) and TABLE2 (every nvpmodel mode: cores, clocks, derived peaks at
their printed precision) are transcribed here from NVIDIA's datasheets and nvpmodel configuration
files (sources and URLs: ``docs/device-model.md`` section 1), independently of the CSVs, so a typo in
either shows up as a mismatch.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from devices import catalog
from devices.catalog import GIB, load_catalog

DOCS = Path(__file__).resolve().parents[2] / "docs" / "device-model.md"

# Module RAM (GiB) and GPU architecture, by catalog type id (module datasheets).
TABLE1 = {
    "tx2": (8, "pascal"),
    "nano": (4, "maxwell"),
    "xavier_nx": (8, "volta"),
    "agx_xavier": (32, "volta"),
    "orin_nano_4gb": (4, "ampere"),
    "orin_nano_8gb": (8, "ampere"),
    "orin_nano_8gb_super": (8, "ampere"),
    "orin_nx_8gb": (8, "ampere"),
    "orin_nx_16gb": (16, "ampere"),
    "agx_orin_32gb": (32, "ampere"),
    "agx_orin_64gb": (64, "ampere"),
}

# Every nvpmodel mode (configuration files and datasheets). Where a configuration file leaves the CPU
# clock at "max", the board maximum of TABLE1's board is given. Peaks (BW GB/s, FP32 TFLOPS, FP16
# TFLOPS) are kept as strings at the precision they were computed to by hand.
# default None: the Nano's nvpmodel default is mode 0 (MAXN), checked separately.
# type, mode_id, mode, default, cpus_on, cpu_ghz, sms, gpu_mhz, emc_mhz, bw, fp32, fp16
TABLE2 = [
    ("tx2", 0, "MAXN", False, 6, 2.035, 2, 1300.5, 1866, "59.7", "0.666", "1.33"),
    ("tx2", 1, "MAXQ", False, 4, 1.2, 2, 850, 1331.2, "42.6", "0.435", "0.87"),
    ("tx2", 2, "MAXP_CORE_ALL", False, 6, 1.4, 2, 1120, 1600, "51.2", "0.573", "1.15"),
    ("tx2", 3, "MAXP_CORE_ARM", True, 4, 2.0, 2, 1120, 1600, "51.2", "0.573", "1.15"),
    ("tx2", 4, "MAXP_CORE_DENVER", False, 2, 2.035, 2, 1120, 1600, "51.2", "0.573", "1.15"),
    ("nano", 0, "MAXN", None, 4, 1.479, 1, 921.6, 1600, "25.6", "0.236", "0.47"),
    ("nano", 1, "5W", False, 2, 0.918, 1, 640, 1600, "25.6", "0.164", "0.33"),
    ("xavier_nx", 0, "15W_2CORE", False, 2, 1.907, 6, 1109.25, 1600, "51.2", "0.852", "6.82"),
    ("xavier_nx", 1, "15W_4CORE", False, 4, 1.421, 6, 1109.25, 1600, "51.2", "0.852", "6.82"),
    ("xavier_nx", 2, "15W_6CORE", True, 6, 1.421, 6, 1109.25, 1600, "51.2", "0.852", "6.82"),
    ("xavier_nx", 3, "10W_2CORE", False, 2, 1.498, 6, 803.25, 1600, "51.2", "0.617", "4.94"),
    ("xavier_nx", 4, "10W_4CORE", False, 4, 1.190, 6, 803.25, 1600, "51.2", "0.617", "4.94"),
    ("agx_xavier", 0, "MAXN", False, 8, 2.266, 8, 1377, 2133, "136.5", "1.410", "11.28"),
    ("agx_xavier", 1, "MODE_10W", False, 2, 1.2, 4, 520, 1066, "68.2", "0.266", "2.13"),
    ("agx_xavier", 2, "MODE_15W", True, 4, 1.2, 8, 670, 1333, "85.3", "0.686", "5.49"),
    ("agx_xavier", 3, "MODE_30W_ALL", False, 8, 1.2, 8, 900, 1600, "102.4", "0.922", "7.37"),
    ("agx_xavier", 4, "MODE_30W_6CORE", False, 6, 1.45, 8, 900, 1600, "102.4", "0.922", "7.37"),
    ("agx_xavier", 5, "MODE_30W_4CORE", False, 4, 1.78, 8, 900, 1600, "102.4", "0.922", "7.37"),
    ("agx_xavier", 6, "MODE_30W_2CORE", False, 2, 2.1, 8, 900, 1600, "102.4", "0.922", "7.37"),
    ("orin_nano_4gb", 0, "10W", True, 6, 1.5, 4, 625, 2133, "34.1", "0.640", "5.12"),
    ("orin_nano_4gb", 1, "7W_AI", False, 4, 0.806, 4, 408, 2133, "34.1", "0.418", "3.34"),
    ("orin_nano_4gb", 2, "7W_CPU", False, 4, 0.96, 4, 306, 2133, "34.1", "0.313", "2.51"),
    ("orin_nano_8gb", 0, "15W", True, 6, 1.5, 8, 625, 2133, "68.3", "1.280", "10.24"),
    ("orin_nano_8gb", 1, "7W", False, 4, 0.96, 4, 408, 2133, "68.3", "0.418", "3.34"),
    ("orin_nano_8gb_super", 0, "15W", False, 6, 1.498, 8, 612, 2133, "68.3", "1.253", "10.03"),
    ("orin_nano_8gb_super", 1, "25W", True, 6, 1.344, 8, 918, 3199, "102.4", "1.880", "15.04"),
    ("orin_nano_8gb_super", 2, "MAXN_SUPER", False, 6, 1.7, 8, 1020, 3199, "102.4", "2.089", "16.71"),
    ("orin_nx_8gb", 0, "MAXN", False, 6, 2.0, 8, 765, 3199, "102.4", "1.567", "12.53"),
    ("orin_nx_8gb", 1, "10W", False, 4, 1.190, 4, 612, 2133, "68.3", "0.627", "5.01"),
    ("orin_nx_8gb", 2, "15W", True, 4, 1.421, 4, 612, 3199, "102.4", "0.627", "5.01"),
    ("orin_nx_8gb", 3, "20W", False, 6, 1.498, 8, 408, 3199, "102.4", "0.836", "6.68"),
    ("orin_nx_16gb", 0, "MAXN", False, 8, 2.0, 8, 918, 3199, "102.4", "1.880", "15.04"),
    ("orin_nx_16gb", 1, "10W", False, 4, 1.190, 4, 612, 2133, "68.3", "0.627", "5.01"),
    ("orin_nx_16gb", 2, "15W", True, 4, 1.651, 4, 612, 3199, "102.4", "0.627", "5.01"),
    ("orin_nx_16gb", 3, "25W", False, 8, 1.498, 8, 408, 3199, "102.4", "0.836", "6.68"),
    ("agx_orin_32gb", 0, "MAXN", False, 8, 2.2, 14, 930, 3199, "204.7", "3.333", "26.66"),
    ("agx_orin_32gb", 1, "MODE_15W", False, 4, 1.114, 6, 408, 2133, "136.5", "0.627", "5.01"),
    ("agx_orin_32gb", 2, "MODE_30W", True, 8, 1.728, 8, 612, 3199, "204.7", "1.253", "10.03"),
    ("agx_orin_32gb", 3, "MODE_40W", False, 8, 1.498, 14, 816, 3199, "204.7", "2.925", "23.40"),
    ("agx_orin_64gb", 0, "MAXN", False, 12, 2.2, 16, 1300, 3199, "204.7", "5.325", "42.60"),
    ("agx_orin_64gb", 1, "MODE_15W", False, 4, 1.114, 6, 408, 2133, "136.5", "0.627", "5.01"),
    ("agx_orin_64gb", 2, "MODE_30W", True, 8, 1.728, 8, 612, 3199, "204.7", "1.253", "10.03"),
    ("agx_orin_64gb", 3, "MODE_50W", False, 12, 1.498, 16, 816, 3199, "204.7", "3.342", "26.74"),
]
TABLE2_IDS = [f"{r[0]}-{r[2]}" for r in TABLE2]


def _printed_tol(printed: str) -> float:
    """Half a unit in the last printed digit (plus a hair for float noise)."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return 0.5 * 10.0**-decimals + 1e-9


def _csv_rows(name: str) -> list[dict[str, str]]:
    with open(catalog.DATA_DIR / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- structure


def test_eleven_types_fortythree_modes():
    cat = load_catalog()
    assert list(cat) == list(TABLE1)
    assert sum(len(t.modes) for t in cat.values()) == 43
    assert len(TABLE2) == 43
    got = [(t, m.name) for t, dt in cat.items() for m in dt.modes]
    assert got == [(r[0], r[2]) for r in TABLE2]


def test_no_orphan_mode_rows_in_csv():
    """load_catalog silently ignores power_modes rows whose type is not in device_types.csv."""
    types = {r["type"] for r in _csv_rows("device_types.csv")}
    modes = _csv_rows("power_modes.csv")
    assert len(modes) == 43
    assert {r["type"] for r in modes} == types
    assert len({(r["type"], r["mode"]) for r in modes}) == 43  # unique (type, mode)


def test_load_catalog_is_cached():
    assert load_catalog() is load_catalog()




@pytest.mark.parametrize(
    "type_id", list(TABLE1)
)
def test_exactly_one_default_mode(type_id):
    dt = catalog.device_type(type_id)
    defaults = [m for m in dt.modes if m.is_default]
    assert len(defaults) == 1
    assert dt.default_mode is defaults[0]
    expected = [r[2] for r in TABLE2 if r[0] == type_id and r[3]] or ["MAXN"]  # no TABLE2 default for the Nano: MAXN
    assert [dt.default_mode.name] == expected


@pytest.mark.parametrize("type_id", list(TABLE1))
def test_mode_ids_and_names(type_id):
    dt = catalog.device_type(type_id)
    assert [m.mode_id for m in dt.modes] == list(range(len(dt.modes)))
    assert len(set(dt.mode_names)) == len(dt.modes)
    assert all(m.device_type == type_id for m in dt.modes)
    for m in dt.modes:
        assert dt.mode(m.name) is m


def test_every_row_has_a_source():
    for dt in load_catalog().values():
        assert dt.source.strip()
        assert re.search(r"S\d+", dt.source)
        for m in dt.modes:
            assert m.source.strip(), (dt.type, m.name)
            assert re.search(r"S\d+", m.source), (dt.type, m.name)
    for r in _csv_rows("device_types.csv") + _csv_rows("power_modes.csv"):
        assert r["source"].strip()


def test_sources_are_listed_in_docs():
    """Every source id a CSV row names has a row, with a URL, in docs/device-model.md's source table."""
    listed = set()
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"S\d+[a-z]?(, S\d+[a-z]?)*", cells[0]) and "http" in cells[2]:
            listed.update(cells[0].split(", "))
    assert {"S3", "S10", "S10s", "S16b"} <= listed
    for dt in load_catalog().values():
        for src in [dt.source] + [m.source for m in dt.modes]:
            for sid in re.findall(r"S\d+[a-z]?", src):
                assert sid in listed, (dt.type, src)


# --------------------------------------------------------------------------- lookup errors


def test_unknown_type_lists_allowed():
    with pytest.raises(KeyError, match="allowed: tx2, nano"):
        catalog.device_type("tx3")


def test_unknown_mode_lists_allowed():
    dt = catalog.device_type("tx2")
    with pytest.raises(KeyError, match="MAXP_CORE_ARM"):
        dt.mode("TURBO")


# --------------------------------------------------------------------------- TABLE1


@pytest.mark.parametrize("type_id", list(TABLE1))
def test_ram_and_arch_match_table1(type_id):
    ram_gib, arch = TABLE1[type_id]
    dt = catalog.device_type(type_id)
    assert dt.ram_bytes == ram_gib * GIB
    assert dt.arch == arch
    # precision default: fp32 without tensor cores, amp with them (docs/device-model.md section 2)
    assert dt.default_precision == ("fp32" if arch in ("pascal", "maxwell") else "amp")
    assert all(m.fp16_on_tensor_cores == (arch in ("volta", "ampere")) for m in dt.modes)
    assert dt.name


# --------------------------------------------------------------------------- TABLE2


@pytest.mark.parametrize("row", TABLE2, ids=TABLE2_IDS)
def test_raw_columns_match_table2(row):
    t, mid, name, default, cpus, ghz, sms, gpu_mhz, emc, *_ = row
    m = catalog.device_type(t).mode(name)
    assert m.mode_id == mid
    if default is not None:
        assert m.is_default == default
    assert m.cpu_cores_online == cpus
    assert m.cpu_max_ghz == pytest.approx(ghz, abs=1e-9)
    assert m.gpu_sms == sms
    assert m.gpu_max_mhz == pytest.approx(gpu_mhz, abs=1e-9)
    assert m.emc_mhz == pytest.approx(emc, abs=1e-9)


@pytest.mark.parametrize("row", TABLE2, ids=TABLE2_IDS)
def test_derived_peaks_match_table2_printed_precision(row):
    t, _, name, *_, bw, fp32, fp16 = row
    m = catalog.device_type(t).mode(name)
    assert m.mem_bw_bytes_per_s / 1e9 == pytest.approx(float(bw), abs=_printed_tol(bw))
    assert m.fp32_peak_flops / 1e12 == pytest.approx(float(fp32), abs=_printed_tol(fp32))
    assert m.fp16_peak_flops / 1e12 == pytest.approx(float(fp16), abs=_printed_tol(fp16))


def test_derivation_formulas_exact():
    """FP32 = SM x cores x 2 x f; FP16 = SM x TC-rate x f or 2 x FP32; BW = EMC x 2 x bus/8."""
    by_key = {(r["type"], r["mode"]): r for r in _csv_rows("power_modes.csv")}
    for dt in load_catalog().values():
        for m in dt.modes:
            r = by_key[(dt.type, m.name)]
            f = float(r["gpu_max_mhz"]) * 1e6
            fp32 = int(r["gpu_sms"]) * int(r["cuda_cores_per_sm"]) * 2 * f
            tc = int(r["tc_flop_per_clk_per_sm"])
            assert tc in (0, 1024, 2048)
            assert tc == {"pascal": 0, "maxwell": 0, "volta": 1024, "ampere": 2048}[dt.arch]
            fp16 = int(r["gpu_sms"]) * tc * f if tc else 2 * fp32
            bw = float(r["emc_mhz"]) * 1e6 * 2 * int(r["bus_bits"]) / 8
            assert m.fp32_peak_flops == pytest.approx(fp32, rel=1e-12)
            assert m.fp16_peak_flops == pytest.approx(fp16, rel=1e-12)
            assert m.mem_bw_bytes_per_s == pytest.approx(bw, rel=1e-12)


def test_peak_flops_and_default_efficiency():
    tx2 = catalog.device_type("tx2").mode("MAXN")
    agx = catalog.device_type("agx_xavier").mode("MAXN")
    assert tx2.peak_flops("fp32") == tx2.fp32_peak_flops
    assert tx2.peak_flops("amp") == tx2.peak_flops("fp16") == tx2.fp16_peak_flops == 2 * tx2.fp32_peak_flops
    assert agx.peak_flops("amp") == agx.fp16_peak_flops
    assert agx.fp16_peak_flops == pytest.approx(8 * agx.fp32_peak_flops)  # 1024 / (64 x 2)
    assert tx2.default_efficiency("fp32") == 0.35
    assert tx2.default_efficiency("amp") == 0.35  # half2 on Pascal
    assert agx.default_efficiency("fp32") == 0.35
    assert agx.default_efficiency("amp") == agx.default_efficiency("fp16") == 0.20


def test_headline_ratios():
    """AGX Xavier MAXN / TX2 MAXN = 11.28 / 1.33 = 8.5x (FP16 peaks) or 1.41 / 0.666 = 2.1x (FP32)."""
    tx2 = catalog.device_type("tx2").mode("MAXN")
    agx = catalog.device_type("agx_xavier").mode("MAXN")
    assert agx.fp16_peak_flops / tx2.fp16_peak_flops == pytest.approx(8.5, abs=0.05)
    assert agx.fp32_peak_flops / tx2.fp32_peak_flops == pytest.approx(2.1, abs=0.05)


def test_nano_default_is_maxn():
    """The Nano's nvpmodel factory default is mode 0 (MAXN, 10 W)."""
    assert catalog.device_type("nano").default_mode.name == "MAXN"
