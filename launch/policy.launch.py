"""Launch the steer policy node: an ONNX policy driving a ros2_control robot through the safety shield.

    ros2 launch steer policy.launch.py policy:=/path/policy.onnx limits:=/path/limits.yaml namespace:=arm1
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# launch argument -> (option of `steer robot run`, default, description); an empty default omits the option.
ARGUMENTS = {
    "policy": ("--policy", "", "ONNX policy exported by `steer export` (required)."),
    "limits": ("--limits", "", "Robot config YAML: joints, limits, topics, rates (default: PlanarPush)."),
    "rate_hz": ("--rate-hz", "", "Control rate in Hz; must match the policy's."),
    "namespace": ("--namespace", "", "Namespace in front of relative topic names."),
    "joint_state_topic": ("--joint-state-topic", "", "sensor_msgs/JointState topic."),
    "controller": ("--controller", "", "Controller taking commands on <controller>/commands."),
    "estop_topic": ("--estop-topic", "", "std_msgs/Bool e-stop topic (transient-local)."),
    "safety_topic": ("--safety-topic", "", "diagnostic_msgs/DiagnosticStatus safety-state topic."),
    "operator_command_topic": ("--operator-command-topic", "",
                               "diagnostic_msgs/DiagnosticStatus topic of signed operator commands (volatile)."),
    "bag_dir": ("--bag-dir", "", "Record each episode as a ROS 2 MCAP bag here."),
    "transport": ("--transport", "rclpy", "rclpy (ROS 2 installed) or dds (Cyclone DDS directly)."),
    "rt_priority": ("--rt-priority", "", "SCHED_FIFO priority of the control loop (empty: normal scheduling)."),
}


def command_arguments(values):
    """`steer robot run` arguments for resolved launch-argument values (empty values are left out)."""
    args = ["robot", "run"]
    for name, (option, _, _) in ARGUMENTS.items():
        if values.get(name):
            args += [option, values[name]]
    return args


def _setup(context, *args, **kwargs):
    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    return [Node(package="steer", executable="steer", name="steer_policy", output="screen",
                 arguments=command_arguments(values))]


def generate_launch_description():
    """The policy node with one launch argument per CLI option above."""
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (_, default, text) in ARGUMENTS.items()]
    return LaunchDescription(declared + [OpaqueFunction(function=_setup)])
