"""One diagram per lesson, and one colour per method across every panel and lesson."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from kdtutorial.course import diagrams, lessons  # noqa: E402
from kdtutorial.course.plotting import colour, savefig  # noqa: E402


def test_every_lesson_has_a_diagram():
    assert set(diagrams.LESSON_DIAGRAMS) == set(lessons.LESSONS)


@pytest.mark.parametrize("lesson", sorted(diagrams.LESSON_DIAGRAMS))
def test_diagram_draws_and_saves(lesson, tmp_path):
    fig = diagrams.LESSON_DIAGRAMS[lesson]()
    assert fig.axes and (fig.axes[0].patches or fig.axes[0].lines or fig.axes[0].containers)
    path = savefig(fig, lesson, tmp_path)
    assert path.stat().st_size > 5000
    plt.close(fig)


def test_diagrams_follow_their_parameters():
    fig = diagrams.triple_loss(layers=[0, 5])
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "student: 2 layers" in texts and "layers 0, 5" in texts
    plt.close(fig)


def test_one_colour_per_method_whatever_the_panel():
    assert colour("teacher (6 layers)") == colour("teacher (cross-encoder)") == colour("teacher")
    assert colour("KD") == colour("vanilla KD") == colour("distilled (triple loss)") == colour("TwinBERT_res, distilled")
    assert colour("scratch") == colour("student, no KD") == colour("TwinBERT_cos, labels only") == colour("baseline")
    assert colour("KD + random mask") != colour("KD") and colour("MATE-KD") != colour("KD")
    assert colour("Annealing KD") != colour("vanilla KD") and colour("TAKD") != colour("KD")
    knn = ["KD", "KD + random pool", "KD + vanilla-8NN", "KD + Minimax-8NN (k1 = 1)", "KD + Minimax-8NN (k1 = 2)",
           "KD + Minimax-8NN (k1 = 4)"]  # lesson 09: six methods, six colours; the random controls share one
    assert len({colour(m) for m in knn}) == 6 and colour("KD + random pool") == colour("KD + random mask")
    assert colour("some new method") == colour("some new method")  # stable for names the table does not know
