"""The project's own room for the Go2: floor, walls, ceiling, and coloured target objects.

Every (colour, shape) pair of vocab.py exists once in the compiled model; an episode's layout moves
the ones it uses into the room and parks the rest under the floor. So one compiled model (and one
renderer) serves every episode, and a reset is a few array writes instead of a recompile.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

from spec_edge_cloud.sim import robot
from spec_edge_cloud.sim.vocab import COLOUR_RGBA, COLOURS, OBJECTS, check_goal

ROBOT_PREFIX = "go2/"
ROOM_HALF = 3.0          # the room is 6 m x 6 m, centred on the origin
WALL_HEIGHT = 2.0        # walls meet the ceiling: no gap onto the empty background
WALL_THICKNESS = 0.1
CEILING_HEIGHT = WALL_HEIGHT
PARKED_Z = -5.0          # unused objects wait here, out of sight under the floor
OBJECT_RADIUS = 0.26     # bounds every footprint (the box corner), for spacing and detours

# Shape sizes (MuJoCo geom sizes) and the height of each object's centre above the floor.
_SHAPES = {
    "ball": (mujoco.mjtGeom.mjGEOM_SPHERE, (0.2, 0.0, 0.0), 0.2),
    "box": (mujoco.mjtGeom.mjGEOM_BOX, (0.18, 0.18, 0.18), 0.18),
    "cone": (mujoco.mjtGeom.mjGEOM_MESH, (0.0, 0.0, 0.0), 0.0),
    "cylinder": (mujoco.mjtGeom.mjGEOM_CYLINDER, (0.16, 0.22, 0.0), 0.22),
}
_CONE_RADIUS, _CONE_HEIGHT = 0.2, 0.5


def object_geom_name(colour: str, shape: str) -> str:
    return f"{colour}_{shape}"


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    x: float
    y: float

    @property
    def name(self) -> str:
        return object_geom_name(self.colour, self.shape)


@dataclass(frozen=True)
class Layout:
    """One episode's room: the objects in it, which one is the goal, and the robot's start pose."""

    objects: tuple[SceneObject, ...]
    goal: int
    start: tuple[float, float, float]  # x, y, yaw (rad)

    @property
    def goal_object(self) -> SceneObject:
        return self.objects[self.goal]


def random_layout(seed: int, goal: tuple[str, str] | None = None, n_objects: int = 4,
                  min_start_distance: float = 1.5, confusers: int = 0) -> Layout:
    """A reproducible layout from a seed: the goal (given or drawn) plus distractors that never
    repeat the goal's (colour, shape), all spread over the room away from the robot's start.

    `confusers` of the distractors share the goal's colour or its shape (training rooms that make
    the model tell a red ball from a red cone); 0 draws them all uniformly, as every evaluation
    room does (the same seed gives the same room as before the option existed)."""
    if not 1 <= n_objects <= len(COLOURS) * len(OBJECTS):
        raise ValueError(f"n_objects must be in 1..{len(COLOURS) * len(OBJECTS)}, got {n_objects}")
    if not 0 <= confusers < n_objects:
        raise ValueError(f"confusers must be in 0..{n_objects - 1}, got {confusers}")
    rng = np.random.default_rng(seed)
    pairs = [(c, o) for c in COLOURS for o in OBJECTS]
    if goal is None:
        goal = pairs[int(rng.integers(len(pairs)))]
    check_goal(*goal)
    others = [p for p in pairs if p != goal]
    if confusers:
        alike = [p for p in others if p[0] == goal[0] or p[1] == goal[1]]
        picked = [alike[i] for i in rng.choice(len(alike), confusers, replace=False)]
        rest = [p for p in others if p not in picked]
        picked += [rest[i] for i in rng.choice(len(rest), n_objects - 1 - confusers, replace=False)]
    else:
        picked = [others[i] for i in rng.choice(len(others), n_objects - 1, replace=False)]
    chosen = [goal] + picked
    margin = 0.6
    for _ in range(1000):
        start_xy = rng.uniform(-ROOM_HALF + margin, ROOM_HALF - margin, 2)
        spots: list[np.ndarray] = []
        for _ in range(200 * n_objects):
            if len(spots) == n_objects:
                break
            p = rng.uniform(-ROOM_HALF + margin, ROOM_HALF - margin, 2)
            if np.linalg.norm(p - start_xy) >= min_start_distance and all(
                    np.linalg.norm(p - q) >= 1.2 for q in spots):
                spots.append(p)
        if len(spots) == n_objects:
            break
    else:
        raise RuntimeError(f"could not place {n_objects} objects in the room (seed {seed})")
    yaw = float(rng.uniform(-math.pi, math.pi))
    objects = tuple(SceneObject(c, o, float(p[0]), float(p[1])) for (c, o), p in zip(chosen, spots))
    return Layout(objects=objects, goal=0, start=(float(start_xy[0]), float(start_xy[1]), yaw))


MAX_IMAGE_SIZE = 512      # offscreen buffer: head-camera images up to this many pixels a side


def build_model(fitted: bool = True) -> mujoco.MjModel:
    """The room with the Go2 (robot.go2_spec(fitted)) attached under ROBOT_PREFIX and every
    object parked."""
    spec = mujoco.MjSpec()
    spec.modelname = "spec_edge_cloud_room"
    spec.option.timestep = robot.PHYSICS_DT
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_EULER
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 100.0
    spec.visual.global_.offwidth = MAX_IMAGE_SIZE
    spec.visual.global_.offheight = MAX_IMAGE_SIZE
    spec.visual.quality.shadowsize = 0
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.45, 0.45, 0.45]
    spec.visual.headlight.specular = [0.0, 0.0, 0.0]
    _add_room(spec)
    _add_objects(spec)
    go2 = robot.go2_spec(fitted)
    for option in ("integrator", "cone", "impratio", "timestep"):
        setattr(go2.option, option, getattr(spec.option, option))
    spec.attach(go2, prefix=ROBOT_PREFIX, frame=spec.worldbody.add_frame())
    return spec.compile()


def _material(spec: mujoco.MjSpec, name: str, rgba: tuple[float, ...], emission: float = 0.0) -> str:
    material = spec.add_material(name=name)
    material.rgba = list(rgba)
    material.emission = emission
    material.specular = 0.1
    material.reflectance = 0.0
    return name


def _add_room(spec: mujoco.MjSpec) -> None:
    world = spec.worldbody
    floor = _material(spec, "floor", (0.42, 0.42, 0.44, 1.0))
    wall = _material(spec, "wall", (0.86, 0.84, 0.78, 1.0))
    ceiling = _material(spec, "ceiling", (0.9, 0.9, 0.9, 1.0), emission=0.6)  # lit from above only
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE,
                   size=[ROOM_HALF + 1.0, ROOM_HALF + 1.0, 0.05], material=floor)
    half_len = ROOM_HALF + WALL_THICKNESS
    for name, pos, size in (
            ("wall_north", (0.0, ROOM_HALF + WALL_THICKNESS / 2, WALL_HEIGHT / 2), (half_len, WALL_THICKNESS / 2)),
            ("wall_south", (0.0, -ROOM_HALF - WALL_THICKNESS / 2, WALL_HEIGHT / 2), (half_len, WALL_THICKNESS / 2)),
            ("wall_east", (ROOM_HALF + WALL_THICKNESS / 2, 0.0, WALL_HEIGHT / 2), (WALL_THICKNESS / 2, half_len)),
            ("wall_west", (-ROOM_HALF - WALL_THICKNESS / 2, 0.0, WALL_HEIGHT / 2), (WALL_THICKNESS / 2, half_len))):
        world.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, pos=pos,
                       size=[size[0], size[1], WALL_HEIGHT / 2], material=wall)
    # A ceiling closes the room (there is no skybox to render).
    world.add_geom(name="ceiling", type=mujoco.mjtGeom.mjGEOM_BOX, pos=[0, 0, CEILING_HEIGHT + 0.02],
                   size=[half_len, half_len, 0.02], material=ceiling, contype=0, conaffinity=0)
    world.add_light(name="sun", pos=[0, 0, CEILING_HEIGHT - 0.1], dir=[0.3, 0.2, -1.0],
                    diffuse=[0.6, 0.6, 0.6], castshadow=False,
                    type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL)


def _add_objects(spec: mujoco.MjSpec) -> None:
    cone = spec.add_mesh(name="cone")
    cone.make_cone(24, 0.0)  # apex at +1, base at -1 in z, unit radius
    cone.scale = [_CONE_RADIUS, _CONE_RADIUS, _CONE_HEIGHT / 2]
    for colour in COLOURS:
        material = _material(spec, f"paint_{colour}", COLOUR_RGBA[colour])
        for shape in OBJECTS:
            kind, size, _ = _SHAPES[shape]
            geom = spec.worldbody.add_geom(name=object_geom_name(colour, shape), type=kind,
                                           size=list(size), pos=[0.0, 0.0, PARKED_Z],
                                           material=material)
            if shape == "cone":
                geom.meshname = "cone"


def object_centre_height(shape: str) -> float:
    """Height of an object's geom frame above the floor when it stands in the room."""
    return _CONE_HEIGHT / 2 if shape == "cone" else _SHAPES[shape][2]


def place_objects(model: mujoco.MjModel, layout: Layout) -> None:
    """Move the layout's objects into the room and park every other one under the floor."""
    placed = {obj.name: obj for obj in layout.objects}
    for colour in COLOURS:
        for shape in OBJECTS:
            gid = model.geom(object_geom_name(colour, shape)).id
            obj = placed.get(object_geom_name(colour, shape))
            pos = (np.array([0.0, 0.0, PARKED_Z]) if obj is None
                   else np.array([obj.x, obj.y, object_centre_height(shape)]))
            if model.geom_type[gid] == mujoco.mjtGeom.mjGEOM_MESH:
                # the compiler re-centred the mesh on its centre of mass and moved the geom by it
                pos = pos + model.mesh_pos[model.geom_dataid[gid]]
            model.geom_pos[gid] = pos
