"""Expert training data: reproducible by seed, in the action grammar, covering search to reach."""
import json

import numpy as np
import pytest
from PIL import Image

from spec_edge_cloud import cli
from spec_edge_cloud.control.actions import parse_answer
from spec_edge_cloud.sim import dataset, scene
from spec_edge_cloud.sim.vocab import parse_instruction
from spec_edge_cloud.sim.world import Go2World

FIELDS = ["image", "instruction", "answer", "episode", "step", "seed"]


@pytest.fixture(scope="module")
def world():
    return Go2World()


def test_same_seed_gives_identical_data_and_another_seed_does_not(world, tmp_path):
    a = dataset.generate(tmp_path / "a", episodes=2, seed=5, world=world)
    b = dataset.generate(tmp_path / "b", episodes=2, seed=5, world=Go2World())  # a fresh world too
    c = dataset.generate(tmp_path / "c", episodes=1, seed=6, world=world)
    text_a = (tmp_path / "a" / dataset.EXAMPLES_FILE).read_bytes()
    assert text_a == (tmp_path / "b" / dataset.EXAMPLES_FILE).read_bytes()
    assert [e.image for e in a] == [e.image for e in b]
    for e in a:
        pixels_a = np.asarray(Image.open(tmp_path / "a" / e.image))
        assert np.array_equal(pixels_a, np.asarray(Image.open(tmp_path / "b" / e.image)))
    assert c[0].seed != a[0].seed
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "c" / c[0].image)),
                              np.asarray(Image.open(tmp_path / "a" / a[0].image)))

def test_examples_are_well_formed_and_cover_search_approach_and_reach(world, tmp_path):
    examples = dataset.generate(tmp_path, episodes=3, seed=11, world=world)
    lines = (tmp_path / dataset.EXAMPLES_FILE).read_text().splitlines()
    assert len(lines) == len(examples) >= 12
    kinds = set()
    for line, example in zip(lines, examples):
        record = json.loads(line)
        assert list(record) == FIELDS
        image = np.asarray(Image.open(tmp_path / record["image"]))
        assert image.shape == (128, 128, 3)
        colour, shape = parse_instruction(record["instruction"])
        observation, actions = parse_answer(record["answer"])
        assert f"{colour} {shape}" in observation
        if observation.startswith("no "):
            kinds.add("search")
            assert [a.verb for a in actions] == ["turn"]
        elif observation.endswith("reached"):
            kinds.add("reached")
            assert [a.verb for a in actions] == ["stop"]
        else:
            kinds.add("approach")
            assert "walk" in [a.verb for a in actions] or actions[0].verb == "turn"
    assert kinds == {"search", "approach", "reached"}
    assert [e.step for e in examples if e.episode == 0] == list(range(sum(e.episode == 0 for e in examples)))


def test_cli_runs_one_episode_and_saves_a_video(tmp_path, capsys):
    video = tmp_path / "run.avi"
    rc = cli.main(["sim", "run", "--instruction", "go to the red ball", "--seed", "3", "--video", str(video)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert '"outcome": "success"' in out
    import cv2
    capture = cv2.VideoCapture(str(video))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames > 20


def test_bad_arguments_are_refused(world, tmp_path):
    with pytest.raises(ValueError, match="episodes"):
        dataset.generate(tmp_path, episodes=0, seed=0, world=world)
    with pytest.raises(ValueError, match="instruction"):
        cli.main(["sim", "run", "--instruction", "find the red ball"])


def test_contrast_views_face_each_object_of_look_alike_rooms_with_answers_the_picture_shows(world, tmp_path):
    seeds = [dataset.episode_seed(3, i) for i in range(3)]
    examples = dataset.generate_contrast(tmp_path / "a", seeds, world=world)
    again = dataset.generate_contrast(tmp_path / "b", seeds[:1], world=Go2World())
    first = [e for e in examples if e.episode == 0]
    assert [e.to_json() for e in again] == [e.to_json() for e in first]  # reproducible by seed
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / first[0].image)),
                          np.asarray(Image.open(tmp_path / "b" / again[0].image)))
    lines = (tmp_path / "a" / dataset.EXAMPLES_FILE).read_text().splitlines()
    assert len(lines) == len(examples) and 8 <= len(examples) <= 12   # one view per object, a few skipped at most
    seen = set()
    for line, example in zip(lines, examples):
        record = json.loads(line)
        assert list(record) == FIELDS and record["seed"] == seeds[record["episode"]]
        layout = scene.random_layout(record["seed"], confusers=2)
        goal = layout.goal_object
        assert parse_instruction(record["instruction"]) == (goal.colour, goal.shape)
        observation, _ = parse_answer(record["answer"])
        seen.add("absent" if observation.startswith("no ") else "goal")
    assert seen == {"absent", "goal"}  # the same rooms show the goal and, elsewhere, only its look-alikes
    with pytest.raises(ValueError):
        dataset.generate_contrast(tmp_path / "c", [], world=world)


def test_every_goal_gives_each_view_the_instruction_of_every_object_with_its_own_answer(world, tmp_path):
    seed = dataset.episode_seed(3, 0)
    plain = dataset.generate_contrast(tmp_path / "a", [seed], world=world)
    every = dataset.generate_contrast(tmp_path / "b", [seed], world=world, every_goal=True)
    layout = scene.random_layout(seed, confusers=2)
    room_goal = (layout.goal_object.colour, layout.goal_object.shape)
    # the room's own goal keeps the answers it had, image for image
    assert [(e.image, e.answer) for e in every if parse_instruction(e.instruction) == room_goal] == \
        [(e.image, e.answer) for e in plain]
    by_image: dict[str, dict] = {}
    for e in every:
        by_image.setdefault(e.image, {})[parse_instruction(e.instruction)] = parse_answer(e.answer)[0]
    assert len(by_image) == len(plain)
    objects = {(o.colour, o.shape) for o in layout.objects}
    for answers in by_image.values():
        assert set(answers) <= objects and len(answers) >= 3
        # the same pixels: the object faced is "ahead" under its own instruction, the others are not
        in_view = [goal for goal, observation in answers.items() if not observation.startswith("no ")]
        assert 1 <= len(in_view) < len(answers)
    # another goal in the same room: only which object counts changes
    world.reset(layout)
    pose, other = world.pose(), (layout.goal + 1) % len(layout.objects)
    world.set_goal(other)
    assert world.layout.goal_object == layout.objects[other] and world.pose() == pose
    with pytest.raises(ValueError, match="no object 99"):
        world.set_goal(99)


def test_close_views_put_an_object_in_front_of_the_robot_and_call_only_the_goal_reached(world, tmp_path):
    seeds = [dataset.episode_seed(4, i) for i in range(2)]
    examples = dataset.generate_close(tmp_path / "a", seeds, world=world)
    again = dataset.generate_close(tmp_path / "b", seeds[:1], world=Go2World())
    assert [e.to_json() for e in again] == [e.to_json() for e in examples if e.episode == 0]  # reproducible by seed
    assert all(e.image.startswith(f"{dataset.IMAGES_DIR}/close") for e in examples)
    # per room: facing each of 4 objects, then behind each of 3 others (views that hide the goal dropped)
    assert 8 <= len(examples) <= 14
    kinds = []
    for e in examples:
        goal = scene.random_layout(e.seed, confusers=2).goal_object
        observation, actions = parse_answer(e.answer)
        reached = observation == f"{goal.colour} {goal.shape} reached"
        kinds.append("reached" if reached else "absent" if observation.startswith("no ") else "goal")
        assert reached == (e.answer == f"{goal.colour} {goal.shape} reached . stop .")
    # the goal from close by is reached; the other objects, as close, are not; behind them the goal shows
    assert "reached" in kinds and {"absent", "goal"} <= set(kinds)
    with pytest.raises(ValueError):
        dataset.generate_close(tmp_path / "c", [], world=world)
