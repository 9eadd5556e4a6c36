"""The power-loss model: what survives is decided from the files (no cluster needed)."""

from __future__ import annotations

import random

from raftka.broker.log.loader import load_log
from raftka.broker.log.log import PartitionLog
from tests.faults.disk_damage import power_cut
from tests.unit.log.helpers import append_values, small_config

NOW = 1_700_000_000_000




def test_what_was_fsynced_survives_and_later_segments_are_gone(tmp_path):
    for seed in range(20):
        directory = tmp_path / f"p-{seed}"
        directory.mkdir()
        config = small_config(segment_bytes=500)
        log = PartitionLog.open(str(directory), config, NOW)
        for i in range(30):
            append_values(log, [str(i).encode() * 40])
            if i == 11:
                log.flush(NOW)
        log.write_checkpoint()
        bases = log.segment_base_offsets()
        assert log.recovery_point == 12 and len(bases) >= 3
        for segment in log._segments:  # the process dies: no flush, no checkpoint
            segment.close()
        cut = power_cut(directory, random.Random(seed))
        assert cut.recovery_point == 12
        assert cut.files_removed == len([b for b in bases if b > max(x for x in bases
                                                                       if x <= 12)])
        loaded = load_log(str(directory), config, NOW)
        try:
            assert 12 <= loaded.log_end_offset < 30
            assert [s.base_offset for s in loaded.segments] == [b for b in bases
                                                               if b <= loaded.log_end_offset]
        finally:
            for segment in loaded.segments:
                segment.close()
