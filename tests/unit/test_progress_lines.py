"""Download progress in Foundry Local's line format."""

from api.downloads.progress_lines import download_lines, final_line, progress_line
from contracts.errors import ErrorInfo
from contracts.events import DoneEvent, DownloadProgress, DownloadResult, ErrorEvent, FileProgress, ProgressEvent


def test_a_progress_line_gives_the_files_fraction_then_the_overall_percentage():
    assert progress_line("model.onnx.data", 0.78, 0.453) == '("model.onnx.data", 0.78) 45.3%\n'


def test_the_final_line_carries_foundrys_keys_and_its_sdks():
    assert final_line(True, None) == (
        '{"Success": true, "ErrorMessage": null, "success": true, "errorMessage": null}\n'
    )


def test_a_download_streams_progress_then_the_last_line_and_success():
    progress = DownloadProgress(
        files=[FileProgress(name="a.bin", bytes_done=50, bytes_total=100)],
        bytes_done=50,
        bytes_total=200,
        current_file="a.bin",
    )
    result = DownloadResult(model="m", path="/m", files=[], bytes_total=200)
    events = [("1", ProgressEvent(progress=progress)), ("2", DoneEvent(result=result))]
    assert list(download_lines(iter(events))) == [
        '("a.bin", 0.5) 25.0%\n',
        '("", 1) 100.0%\n',
        final_line(True, None),
    ]


def test_a_failed_download_ends_with_its_error_message():
    error = ErrorEvent(error=ErrorInfo(status=404, message="no such repo", type="not_found_error"))
    assert list(download_lines(iter([("1", error)]))) == [final_line(False, "no such repo")]


def test_the_building_phase_of_a_build_on_pull_adds_no_line():
    """Foundry's lines name files; the builder's stages are in the job's `progress` instead."""
    files = [FileProgress(name="model.safetensors", bytes_done=100, bytes_total=100)]
    building = DownloadProgress(files=files, bytes_done=100, bytes_total=100, phase="building", stage="Reading layer 0")
    result = DownloadResult(model="m", path="/m", files=files, bytes_total=100)
    events = [("1", ProgressEvent(progress=building)), ("2", DoneEvent(result=result))]
    assert list(download_lines(iter(events))) == ['("", 1) 100.0%\n', final_line(True, None)]
