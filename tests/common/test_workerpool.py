"""The process pool (``kdtutorial.common.workerpool``): results in the order of the jobs, here or in processes; what
crosses a process boundary goes through ``encode`` / ``decode``; a bad worker count and a process that dies give
errors that say what to do. Its users test their own jobs (``tests/vision/test_seedprocesses.py``,
``tests/common/test_processes.py``)."""
import os
from pathlib import Path

import pytest
import torch

from kdtutorial.common.workerpool import map_in_processes


def _add(shared, job):
    return shared + job


def _tag(obj):
    return ("tagged", obj)


def _untag(obj):
    assert obj[0] == "tagged"
    return obj[1]


def _dying(shared, job):
    os._exit(3)  # as a process killed for memory ends


def _short_of_memory_once(folder, job):
    """Runs out of GPU memory the first time each job is tried (a marker file remembers it across processes)."""
    marker = Path(folder) / f"job-{job}"
    if not marker.exists():
        marker.touch()
        raise torch.OutOfMemoryError(f"CUDA out of memory (simulated) in job {job}")
    return job * 10


def test_results_come_in_the_order_of_the_jobs_here_and_in_processes():
    assert map_in_processes(_add, 10, [1, 2, 3], workers=1) == [11, 12, 13]
    assert map_in_processes(_add, 10, [1, 2, 3], workers=2, threads=1) == [11, 12, 13]


def test_what_crosses_a_process_boundary_is_encoded_and_decoded():
    # shared goes out tagged and is untagged in the process; each result comes back the same way
    assert map_in_processes(_add, 10, [1, 2], workers=2, threads=1, encode=_tag, decode=_untag) == [11, 12]


def test_a_bad_worker_count_is_refused_by_name():
    with pytest.raises(ValueError, match="workers = -2 is not allowed"):
        map_in_processes(_add, 0, [1], workers=-2)


def test_a_worker_that_dies_gives_a_clear_error():
    with pytest.raises(RuntimeError, match="workers = 2 each process holds its own models; try fewer workers"):
        map_in_processes(_dying, None, [1, 2], workers=2, threads=1)


def test_jobs_short_of_gpu_memory_run_again_with_half_the_processes(tmp_path):
    with pytest.warns(RuntimeWarning, match="4 of 4 jobs ran out of GPU memory with 4 processes sharing the GPU: "
                                            "running them again with 2 processes"):
        assert map_in_processes(_short_of_memory_once, str(tmp_path), [1, 2, 3, 4], workers=4, threads=1) == \
            [10, 20, 30, 40]


def test_with_two_processes_the_jobs_short_of_memory_run_here_one_after_another(tmp_path):
    (tmp_path / "job-1").touch()  # job 1 fits; job 2 runs out once, then runs here
    with pytest.warns(RuntimeWarning, match="1 of 2 jobs ran out of GPU memory with 2 processes sharing the GPU: "
                                            "running them again one after another here"):
        assert map_in_processes(_short_of_memory_once, str(tmp_path), [1, 2], workers=2, threads=1) == [10, 20]
