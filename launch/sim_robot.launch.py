"""Launch the simulated robot: a MuJoCo task in real time behind ROS 2 topics.

    ros2 launch steer sim_robot.launch.py rate_hz:=20.0 namespace:=arm1
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# launch argument -> (option of `steer robot sim`, default, description); an empty default omits the option.
ARGUMENTS = {
    "task": ("--task", "", "Gymnasium id of the MuJoCo task (default: steer/PlanarPush-v0)."),
    "limits": ("--limits", "", "Robot config YAML: joints, limits, topics, rates (default: PlanarPush)."),
    "rate_hz": ("--rate-hz", "", "Control rate in Hz; must match the task's."),
    "namespace": ("--namespace", "", "Namespace in front of relative topic names."),
    "joint_state_topic": ("--joint-state-topic", "", "sensor_msgs/JointState topic."),
    "controller": ("--controller", "", "Controller taking commands on <controller>/commands."),
    "episodes": ("--episodes", "", "Episodes to run (default: until stopped)."),
    "seed": ("--seed", "", "Seed of the first episode."),
    "transport": ("--transport", "rclpy", "rclpy (ROS 2 installed) or dds (Cyclone DDS directly)."),
    "rt_priority": ("--rt-priority", "", "SCHED_FIFO priority of the simulation loop (empty: normal scheduling)."),
    "reset_mode": ("--reset-mode", "", "auto (the robot resets itself) or operator (it waits after each episode "
                   "for the operator's signed reset_done)."),
}


def command_arguments(values):
    """`steer robot sim` arguments for resolved launch-argument values (empty values are left out)."""
    args = ["robot", "sim"]
    for name, (option, _, _) in ARGUMENTS.items():
        if values.get(name):
            args += [option, values[name]]
    return args


def _setup(context, *args, **kwargs):
    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    return [Node(package="steer", executable="steer", name="steer_sim_robot", output="screen",
                 arguments=command_arguments(values))]


def generate_launch_description():
    """The simulated robot with one launch argument per CLI option above."""
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (_, default, text) in ARGUMENTS.items()]
    return LaunchDescription(declared + [OpaqueFunction(function=_setup)])
