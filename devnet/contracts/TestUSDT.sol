// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title TestUSDT
/// @notice A minimal ERC-20 standing in for USDT on Perceptron's offline
/// development chain (`perceptron-server -dev`). It has no value and must
/// never be deployed anywhere else.
/// @dev The devnet deploys it as ("Tether USD (dev)", "USDT", 6), like USDT
/// on Ethereum; tests also deploy look-alikes (a fake token, an 18-decimal
/// token like BSC's). Only the deployer (the devnet's faucet) may mint.
contract TestUSDT {
    /// @notice The token's name.
    string public name;
    /// @notice The token's symbol.
    string public symbol;
    /// @notice Base units per token are 10**decimals.
    uint8 public immutable decimals;

    /// @notice The account allowed to mint: the deployer.
    address public immutable owner;
    /// @notice Tokens in existence.
    uint256 public totalSupply;
    /// @notice Each account's balance.
    mapping(address => uint256) public balanceOf;
    /// @notice allowance[holder][spender] is what spender may still move.
    mapping(address => mapping(address => uint256)) public allowance;

    /// @notice Emitted on every move of tokens, mints included (from = 0).
    event Transfer(address indexed from, address indexed to, uint256 value);
    /// @notice Emitted when an allowance is set.
    event Approval(address indexed owner, address indexed spender, uint256 value);

    constructor(string memory name_, string memory symbol_, uint8 decimals_) {
        owner = msg.sender;
        name = name_;
        symbol = symbol_;
        decimals = decimals_;
    }

    /// @notice Moves value tokens from the caller to `to`.
    function transfer(address to, uint256 value) external returns (bool) {
        _transfer(msg.sender, to, value);
        return true;
    }

    /// @notice Lets spender move up to value of the caller's tokens.
    function approve(address spender, uint256 value) external returns (bool) {
        require(spender != address(0), "ERC20: approve to the zero address");
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    /// @notice Moves value tokens from `from` to `to` using the caller's allowance.
    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            require(allowed >= value, "ERC20: insufficient allowance");
            unchecked {
                allowance[from][msg.sender] = allowed - value;
            }
        }
        _transfer(from, to, value);
        return true;
    }

    /// @notice Creates value tokens for `to`. Owner only.
    function mint(address to, uint256 value) external {
        require(msg.sender == owner, "TestUSDT: caller is not the owner");
        require(to != address(0), "ERC20: mint to the zero address");
        totalSupply += value;
        unchecked {
            balanceOf[to] += value;
        }
        emit Transfer(address(0), to, value);
    }

    function _transfer(address from, address to, uint256 value) internal {
        require(to != address(0), "ERC20: transfer to the zero address");
        uint256 balance = balanceOf[from];
        require(balance >= value, "ERC20: transfer amount exceeds balance");
        unchecked {
            balanceOf[from] = balance - value;
            balanceOf[to] += value;
        }
        emit Transfer(from, to, value);
    }
}
