"""Folders cooptim writes: --force only replaces its own, one writer at a time, one error line."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cooptim import config, folders, train
from cooptim.cli import train as train_cli
from cooptim.export import __main__ as export_cli

REPO = Path(__file__).resolve().parents[2]


def test_force_never_deletes_a_folder_that_holds_the_source_or_a_users_file(tmp_path):
    runs = tmp_path / "runs"
    (runs / "quickstart").mkdir(parents=True)
    folders.mark(runs / "quickstart", "run")
    # `export runs/quickstart --out runs --force`: runs/ holds the run itself
    with pytest.raises(folders.FolderError, match="holds .*quickstart, the source of this command"):
        folders.check_replaceable(runs, "export", protect=(runs / "quickstart",))
    # a folder cooptim did not make
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("years of work")
    with pytest.raises(folders.FolderError, match="has no cooptim marker"):
        folders.replace(thesis, "run")
    # a run folder in which the user left a file of their own
    (runs / "quickstart" / "notes.txt").write_text("mine")
    with pytest.raises(folders.FolderError, match=r"holds files cooptim does not write there \(notes.txt\)"):
        folders.replace(runs / "quickstart", "run")
    # an export is not a run, and the reverse
    with pytest.raises(folders.FolderError, match="is a cooptim run folder"):
        folders.replace(runs / "quickstart", "export")
    assert (thesis / "thesis.tex").read_text() == "years of work" and (runs / "quickstart" / "notes.txt").exists()
    (runs / "quickstart" / "notes.txt").unlink()
    folders.replace(runs / "quickstart", "run")
    assert not (runs / "quickstart").exists()


def test_train_force_refuses_a_users_folder_before_any_setup(tmp_path, capsys):
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "chapter1.tex").write_text("x")
    rc = train_cli.main(["--config", str(REPO / "configs/quickstart.yaml"), "--force", "--quiet",
                         "--set", f"output_dir={tmp_path}", "--set", "name=thesis"])
    assert rc == 2
    assert "has no cooptim marker" in capsys.readouterr().err
    assert (tmp_path / "thesis" / "chapter1.tex").exists()


HOLD = "import sys, time; from pathlib import Path; from cooptim import folders; " \
       "folders.Lock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)"


def test_a_second_writer_is_refused_with_the_holders_pid_and_a_dead_holders_lock_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(folders.FolderError, match=f"in use by process {holder.pid}"):
            folders.Lock(folder).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with folders.Lock(folder) as lock:  # the kernel released the dead process's lock
        assert Path(lock.path).read_text() == str(os.getpid())


@pytest.mark.parametrize("setup, args, message", [
    ("binary", [], "not a text file"),
    ("list", ["--set", "seed=1"], "a config is a YAML mapping of sections"),
    ("under_a_file", [], "cannot create the run folder"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, setup, args, message):
    path = tmp_path / "c.yaml"
    if setup == "binary":
        path.write_bytes(bytes(range(256)))
    elif setup == "list":
        path.write_text("- a\n- b\n")
    else:
        (tmp_path / "afile").write_text("x")
        raw = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
        raw.update(output_dir=str(tmp_path / "afile" / "runs"), train={"steps": 2})
        path.write_text(yaml.safe_dump(raw))
    rc = train_cli.main(["--config", str(path), "--quiet", *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and message in err and "Traceback" not in err


def test_export_refuses_bad_outputs_in_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert export_cli.main([str(tmp_path / "norun"), "--out", str(tmp_path / "afile" / "hw")]) == 2
    assert "is not a writable folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_cli.main([str(tmp_path), "--out", str(tmp_path / "hw"), "--vectors", "-1"])
    assert "must be 0 or more" in capsys.readouterr().err


def test_a_moved_run_folder_resumes(tmp_path):
    raw = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    raw.update(output_dir=str(tmp_path / "a"))
    cfg = config.from_dict(raw)
    cfg.run_dir.mkdir(parents=True)
    config.save(cfg, cfg.run_dir / "config.yaml")
    moved = config.from_dict({**raw, "output_dir": str(tmp_path / "b")})
    (tmp_path / "b").mkdir()
    os.replace(cfg.run_dir, moved.run_dir)
    assert train.checkpoint.check_run_dir(moved, resume=True, force=False) == moved.run_dir
    changed = config.from_dict({**raw, "output_dir": str(tmp_path / "b"), "seed": 3})
    with pytest.raises(train.RunError, match="differs .* at seed"):
        train.checkpoint.check_run_dir(changed, resume=True, force=False)


def test_a_force_run_into_a_folder_another_run_is_writing_is_refused(tmp_path):
    raw = yaml.safe_load((REPO / "configs/quickstart.yaml").read_text())
    raw.update(output_dir=str(tmp_path), train={"steps": 2})
    cfg = config.from_dict(raw)
    cfg.run_dir.mkdir(parents=True)
    folders.mark(cfg.run_dir, "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(cfg.run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(folders.FolderError, match=f"run folder .* is in use by process {holder.pid}"):
            train.run(cfg, force=True)
        assert (cfg.run_dir / folders.MARKER).exists()  # the other run's folder is untouched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_ctrl_c_during_an_export_is_one_line_and_status_130(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_cli, "export", interrupted)
    assert export_cli.main([str(tmp_path), "--out", str(tmp_path / "hw")]) == 130
    err = capsys.readouterr().err
    assert err == "interrupted\n"
    assert not (tmp_path / "hw").exists()
