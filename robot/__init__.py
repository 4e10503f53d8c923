"""steer.robot: run an exported policy on a robot, safely, over ROS 2 topics.

Needs only numpy, pyyaml, onnxruntime, cyclonedds and cryptography (``pip install 'steer-rl[robot]'``);
never torch. The simulated robot additionally needs the MuJoCo task (``steer.sim``),
imported only when it runs.

Modules, one concept each:

* ``spec``        the wire contracts (ONNX policy spec, safety state, signed operator commands): one writer and
  one reader each
* ``config``      robot config (joints, limits, topics, rates, trusted operator keys) from a limits YAML
* ``keys``        operator keys, signing and checking of release, arm and promote
* ``promotion``   promoted policies: only signed files of the policies directory, loaded off the control thread
* ``shield``      the safety shield and its mode machine; every command passes it
* ``onnx_policy`` ONNX policy with spec/shape checks and open-loop chunk execution
* ``messages``    ROS 2 message types (cyclonedds IDL) with RIHS01 type hashes
* ``transport``   the transport interface; ``dds_transport`` and ``rclpy_transport`` implement it
* ``policy_node`` the transport-agnostic policy node (``intake``: what it accepts from the network)
* ``sim_robot``   a MuJoCo task as a ROS 2 robot, paced in real time
* ``bag``         episode bags (ROS 2, MCAP storage)
* ``processes``   the node and robot processes behind ``steer robot run`` / ``steer robot sim``
* ``closed_loop`` closed-loop episodes over DDS in two processes, for the demo and tests
"""
